//! What the explorer is showing, as a URL query string (`?schedule=cosine&t=250&sampler=ddim&steps=50&eta=0&seed=7`),
//! so a view can be shared and replayed exactly, and which backend and build the page runs on
//! (`&backend=cpu`, `&wasm=simd128`).
//! Pure string handling: no DOM here, so it is tested natively.

use crate::diffusion::sampler::{SamplerConfig, SamplerSetting};
use crate::diffusion::schedule::ScheduleKind;

/// Which backend the page asked for with `?backend=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendPreference {
    /// WebGPU on a hardware adapter; the CPU backend when there is none or the adapter is a
    /// software rasteriser (SwiftShader is far slower than burn's CPU backend).
    #[default]
    Auto,
    /// WebGPU on whatever adapter the browser grants, software included (`?backend=webgpu`).
    WebGpu,
    /// burn's CPU backend (`?backend=cpu`).
    Cpu,
}

/// Which of the page's two builds its loader starts (`?wasm=`; read by the loader that
/// scripts/post_build.py writes, before this module runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WasmPreference {
    /// The build with relaxed SIMD's multiply-add where the browser has relaxed SIMD, else the
    /// page's own.
    #[default]
    Auto,
    /// The page's own build, WebAssembly SIMD alone (`?wasm=simd128`): what a browser without
    /// relaxed SIMD runs, to compare the two.
    Simd128,
}

/// The shareable state of the explorer.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewState {
    /// Schedule shown in the forward panel.
    pub schedule: ScheduleKind,
    /// The forward panel's timestep.
    pub t: usize,
    /// Index of the chosen real digit.
    pub digit: usize,
    /// Seed of the forward ε and the reverse chain.
    pub seed: u64,
    /// The reverse sampler.
    pub sampler: SamplerConfig,
    /// The backend asked for (read once, when the page opens; kept in the URL as it was).
    pub backend: BackendPreference,
    /// The build asked for (read by the page's loader; kept in the URL as it was).
    pub wasm: WasmPreference,
    /// The reverse chain's step on screen (`&replay=k`): a link with it regenerates the chain from
    /// x_T (same seed and sampler) and shows step k.
    pub replay: Option<usize>,
    /// Class-conditional models: the class the reverse chain asks for (`&class=7`; `None`: any).
    pub class: Option<usize>,
    /// Class-conditional models: the guidance scale w (`&w=2`).
    pub guidance: f64,
    /// Which of the page's models (`&model=fashion`; `None`: the first, what `assets/` holds).
    pub model: Option<String>,
}

/// The guidance scales the page offers (its slider's range).
pub const PAGE_MAX_GUIDANCE: f64 = 5.0;

impl Default for ViewState {
    fn default() -> Self {
        Self {
            schedule: ScheduleKind::Linear,
            t: 250,
            digit: 0,
            seed: 1,
            sampler: SamplerConfig::default(),
            backend: BackendPreference::Auto,
            wasm: WasmPreference::Auto,
            replay: None,
            class: None,
            guidance: 0.0,
            model: None,
        }
    }
}

impl ViewState {
    /// Parses a query string (with or without the leading `?`). Unknown keys and unparsable values
    /// are ignored, so an old or hand-edited link still opens; values are clamped to what `timesteps`
    /// allows.
    pub fn from_query(query: &str, timesteps: usize) -> Self {
        Self::parse(query).clamped(timesteps)
    }

    /// t and the DDIM steps brought within a model's `timesteps`.
    pub fn clamped(self, timesteps: usize) -> Self {
        self.clamped_noting(timesteps, &mut Vec::new())
    }

    /// The class brought within a model's `classes` (`None`: unconditional, which takes none).
    pub fn with_classes_noting(mut self, classes: Option<usize>, notices: &mut Vec<String>) -> Self {
        if let Some(c) = self.class {
            match classes {
                None => {
                    notices.push(format!("class={c}: this model draws without classes; ignored"));
                    self.class = None;
                }
                Some(n) if c >= n => {
                    notices.push(format!(
                        "class={c} is not one of this model's classes 0 to {}; showing any",
                        n - 1
                    ));
                    self.class = None;
                }
                Some(_) => {}
            }
        }
        self
    }

    /// [`Self::clamped`], adding a line to `notices` for each value it had to change.
    pub fn clamped_noting(mut self, timesteps: usize, notices: &mut Vec<String>) -> Self {
        let last = timesteps.saturating_sub(1);
        if self.t > last {
            notices.push(format!(
                "t = {} is past this model's last timestep; showing t = {last}",
                self.t
            ));
            self.t = last;
        }
        let (sampler, notice) = self.sampler.within(timesteps);
        self.sampler = sampler;
        notices.extend(notice);
        self
    }

    /// Parses a query string without knowing the model's T (the backend has to be known before
    /// the model is loaded); [`Self::from_query`] clamps t and the steps to T as well.
    pub fn parse(query: &str) -> Self {
        Self::parse_noting(query).0
    }

    /// [`Self::parse`], with a line for each value it could not take as written: which key, what it
    /// said, and what is shown instead. The page shows them, so a link that asked for something
    /// impossible says so instead of silently showing something else.
    pub fn parse_noting(query: &str) -> (Self, Vec<String>) {
        let mut notices = Vec::new();
        let mut s = Self::default();
        // The sampler's word and its settings are read after the rest: a link may name them in any order.
        let (mut word, mut settings) = (None, Vec::new());
        for pair in query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let note = |expected: &str, kept: String| format!("{k}={v} is not {expected}: ignored (using {kept})");
            let mut unreadable = |expected: &str, kept: String| notices.push(note(expected, kept));
            match k {
                "schedule" => match v.parse() {
                    Ok(kind) => s.schedule = kind,
                    Err(_) => unreadable("linear or cosine", s.schedule.to_string()),
                },
                "t" => match v.parse() {
                    Ok(t) => s.t = t,
                    Err(_) => unreadable("a timestep (a whole number from 0)", s.t.to_string()),
                },
                "digit" => match v.parse() {
                    Ok(d) => s.digit = d,
                    Err(_) => unreadable("a digit's index (a whole number from 0)", s.digit.to_string()),
                },
                "seed" => match v.parse() {
                    Ok(seed) => s.seed = seed,
                    Err(_) => unreadable("a seed (a whole number from 0)", s.seed.to_string()),
                },
                "sampler" => word = Some(v),
                "steps" | "eta" | "variance" => settings.push((k, v)),
                "class" => match v.parse() {
                    Ok(c) => s.class = Some(c),
                    Err(_) if v == "any" => s.class = None,
                    Err(_) => unreadable("a class index (a whole number from 0) or any", "any".into()),
                },
                "w" => match v.parse::<f64>() {
                    Ok(w) if (0.0..=PAGE_MAX_GUIDANCE).contains(&w) => s.guidance = w,
                    _ => unreadable(
                        &format!("a guidance scale between 0 and {PAGE_MAX_GUIDANCE}"),
                        "0".into(),
                    ),
                },
                "model" => match is_model_id(v) {
                    true => s.model = Some(v.to_string()),
                    false => unreadable("a model's name (letters, digits and '-')", "the first model".into()),
                },
                "replay" => match v.parse() {
                    Ok(k) => s.replay = Some(k),
                    Err(_) => unreadable("a step number (a whole number from 0)", "none".into()),
                },
                "backend" => {
                    s.backend = match v {
                        "cpu" => BackendPreference::Cpu,
                        "webgpu" => BackendPreference::WebGpu,
                        "auto" => BackendPreference::Auto,
                        _ => {
                            unreadable("cpu, webgpu or auto", "auto".into());
                            BackendPreference::Auto
                        }
                    }
                }
                "wasm" => match v {
                    "simd128" => s.wasm = WasmPreference::Simd128,
                    "auto" => s.wasm = WasmPreference::Auto,
                    _ => unreadable("simd128 or auto", "auto".into()),
                },
                _ => unreadable_key(&mut notices, k),
            }
        }
        s.sampler = sampler_noting(word, &settings, &mut notices);
        (s, notices)
    }

    /// The query string (with the leading `?`).
    pub fn to_query(&self) -> String {
        let sampler = format!("sampler={}", self.sampler.name());
        let backend = match self.backend {
            BackendPreference::Auto => "",
            BackendPreference::WebGpu => "&backend=webgpu",
            BackendPreference::Cpu => "&backend=cpu",
        };
        let wasm = match self.wasm {
            WasmPreference::Auto => "",
            WasmPreference::Simd128 => "&wasm=simd128",
        };
        let replay = self.replay.map(|k| format!("&replay={k}")).unwrap_or_default();
        let class = self
            .class
            .map(|c| format!("&class={c}&w={}", self.guidance))
            .unwrap_or_default();
        let model = self.model.as_ref().map(|m| format!("model={m}&")).unwrap_or_default();
        format!(
            "?{model}schedule={}&t={}&digit={}&seed={}&{sampler}{class}{replay}{backend}{wasm}",
            self.schedule, self.t, self.digit, self.seed
        )
    }
}

/// A model's id as a link may carry it: 1 to 32 ASCII letters, digits and '-'.
pub fn is_model_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The notice for a key the page does not know.
fn unreadable_key(notices: &mut Vec<String>, key: &str) {
    notices.push(format!("'{key}' is not a setting of this page: ignored"));
}

/// The sampler a link names: its word (`sampler=ddim50`, `sampler=ddpm-beta`; the default when
/// absent) with the settings given one by one (`steps=`, `eta=`, `variance=`, as older links
/// wrote them), each checked by the sampler's own grammar; what cannot be taken is noted.
fn sampler_noting(word: Option<&str>, settings: &[(&str, &str)], notices: &mut Vec<String>) -> SamplerConfig {
    let mut sampler = SamplerConfig::default();
    if let Some(word) = word {
        match word.parse() {
            Ok(named) => sampler = named,
            Err(e) => notices.push(format!("sampler={word}: {e}; ignored (using {})", sampler.name())),
        }
    }
    for &(key, value) in settings {
        let setting = match key {
            "steps" => value
                .parse()
                .map(SamplerSetting::Steps)
                .map_err(|_| "not a number of steps (1 or more)"),
            "eta" => value
                .parse()
                .map(SamplerSetting::Eta)
                .map_err(|_| "not an η between 0 and 1"),
            _ => value
                .parse()
                .map(SamplerSetting::Variance)
                .map_err(|_| "not beta or beta-tilde"),
        };
        match setting
            .map_err(str::to_string)
            .and_then(|s| sampler.with_setting(s).map_err(|e| e.to_string()))
        {
            Ok(changed) => sampler = changed,
            Err(why) => notices.push(format!("{key}={value}: {why}; ignored (using {})", sampler.name())),
        }
    }
    sampler
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::sampler::VarianceKind;

    #[test]
    fn query_round_trip_and_tolerance() {
        let s = ViewState {
            schedule: ScheduleKind::Cosine,
            t: 999,
            digit: 3,
            seed: 42,
            sampler: SamplerConfig::Ddpm {
                variance: VarianceKind::Beta,
                clip_x0: true,
            },
            backend: BackendPreference::Cpu,
            wasm: WasmPreference::Simd128,
            replay: Some(17),
            class: Some(7),
            guidance: 2.5,
            model: Some("fashion".into()),
        };
        assert_eq!(
            s.to_query(),
            "?model=fashion&schedule=cosine&t=999&digit=3&seed=42&sampler=ddpm-beta&class=7&w=2.5&replay=17&backend=cpu&wasm=simd128"
        );
        assert_eq!(ViewState::from_query(&s.to_query(), 1000), s);
        let d = ViewState::from_query("?t=5000&eta=7&steps=0&bogus=1&seed=x", 1000);
        assert_eq!(d.t, 999);
        assert_eq!(d.seed, 1);
        assert_eq!(d.replay, None);
        // Unreadable or out-of-range values are ignored: the defaults stay.
        assert_eq!(d.sampler, SamplerConfig::default());
        assert_eq!(ViewState::from_query("", 1000), ViewState::default());
    }

    #[test]
    fn every_value_not_taken_as_written_is_noted_with_its_key_and_why() {
        let (view, notices) = ViewState::parse_noting("?steps=-5&eta=abc&t=12&bogus=1&sampler=plms");
        assert_eq!(view.sampler, SamplerConfig::default());
        assert_eq!(view.t, 12);
        assert_eq!(notices.len(), 4, "{notices:?}");
        let noted = |start: &str| notices.iter().any(|n| n.starts_with(start));
        assert!(noted("steps=-5: not a number of steps"), "{notices:?}");
        assert!(noted("eta=abc: not an η between 0 and 1"), "{notices:?}");
        assert!(noted("'bogus' is not a setting"), "{notices:?}");
        assert!(noted("sampler=plms: unknown sampler 'plms'"), "{notices:?}");
        // Old links name the sampler and its settings apart; a setting the sampler lacks is noted.
        let (view, notices) = ViewState::parse_noting("?eta=0.5&sampler=ddim&steps=7&variance=beta");
        assert_eq!(view.sampler, "ddim7-eta0.5".parse().unwrap());
        assert_eq!(
            notices,
            ["variance=beta: DDIM takes no variance choice; ignored (using ddim7-eta0.5)"]
        );
        let (view, notices) = ViewState::parse_noting("?sampler=ddim20-eta1.5");
        assert_eq!((view.sampler, notices.len()), (SamplerConfig::default(), 1));
        assert!(notices[0].contains("eta must be in [0, 1]"), "{notices:?}");
        let mut clamped = Vec::new();
        let view = ViewState::parse("?t=5000&steps=2000").clamped_noting(1000, &mut clamped);
        assert_eq!((view.t, clamped.len()), (999, 2));
        assert!(
            clamped[0].contains("t = 5000") && clamped[1].contains("steps = 2000"),
            "{clamped:?}"
        );
        // Guidance: a w past the slider and a class the model does not have are noted.
        let (view, notices) = ViewState::parse_noting("?class=12&w=9");
        assert_eq!((view.class, view.guidance), (Some(12), 0.0));
        assert!(notices[0].starts_with("w=9 is not a guidance scale"), "{notices:?}");
        let mut more = Vec::new();
        assert_eq!(view.clone().with_classes_noting(Some(10), &mut more).class, None);
        assert_eq!(view.with_classes_noting(None, &mut more).class, None);
        assert_eq!(more.len(), 2, "{more:?}");
        // A model's name is a word, not a path.
        let (view, notices) = ViewState::parse_noting("?model=../secret");
        assert_eq!((view.model, notices.len()), (None, 1));
        assert!(
            notices[0].starts_with("model=../secret is not a model's name"),
            "{notices:?}"
        );
        // A link the page wrote itself has nothing to note.
        let (_, none) = ViewState::parse_noting(&ViewState::default().to_query());
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn the_backend_and_the_build_are_read_from_the_url_before_the_model_is_known() {
        assert_eq!(ViewState::parse("?t=3&backend=cpu").backend, BackendPreference::Cpu);
        assert_eq!(ViewState::parse("?backend=webgpu").backend, BackendPreference::WebGpu);
        assert_eq!(ViewState::parse("?backend=tpu").backend, BackendPreference::Auto);
        assert_eq!(ViewState::parse("?wasm=simd128").wasm, WasmPreference::Simd128);
        let (view, notices) = ViewState::parse_noting("?wasm=sse2");
        assert_eq!(view.wasm, WasmPreference::Auto);
        assert_eq!(notices, ["wasm=sse2 is not simd128 or auto: ignored (using auto)"]);
        // Without a model, t and the steps are not clamped yet.
        assert_eq!(ViewState::parse("?t=5000").t, 5000);
        assert_eq!(ViewState::from_query("?t=5000", 1000).t, 999);
    }
}
