//! What the explorer is showing, as a URL query string (`?schedule=cosine&t=250&sampler=ddim&steps=50&eta=0&seed=7`),
//! so a view can be shared and replayed exactly, and which backend the page runs on (`&backend=cpu`).
//! Pure string handling: no DOM here, so it is tested natively.

use crate::diffusion::sampler::{SamplerConfig, VarianceKind};
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
    /// The reverse chain's step on screen (`&replay=k`): a link with it regenerates the chain from
    /// x_T (same seed and sampler) and shows step k.
    pub replay: Option<usize>,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            schedule: ScheduleKind::Linear,
            t: 250,
            digit: 0,
            seed: 1,
            sampler: SamplerConfig::default(),
            backend: BackendPreference::Auto,
            replay: None,
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
    pub fn clamped(mut self, timesteps: usize) -> Self {
        self.t = self.t.min(timesteps.saturating_sub(1));
        if let SamplerConfig::Ddim { steps, .. } = &mut self.sampler {
            *steps = (*steps).clamp(1, timesteps.max(1));
        }
        self
    }

    /// Parses a query string without knowing the model's T (the backend has to be known before
    /// the model is loaded); [`Self::from_query`] clamps t and the steps to T as well.
    pub fn parse(query: &str) -> Self {
        let mut s = Self::default();
        let (mut kind, mut steps, mut eta, mut variance) =
            ("ddim".to_string(), 50usize, 0.0f64, VarianceKind::default());
        for pair in query.trim_start_matches('?').split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "schedule" => s.schedule = v.parse().unwrap_or(s.schedule),
                "t" => s.t = v.parse().unwrap_or(s.t),
                "digit" => s.digit = v.parse().unwrap_or(s.digit),
                "seed" => s.seed = v.parse().unwrap_or(s.seed),
                "sampler" if v == "ddpm" || v == "ddim" => kind = v.to_string(),
                "steps" => steps = v.parse().unwrap_or(steps),
                "eta" => eta = v.parse().unwrap_or(eta),
                "variance" => variance = v.parse().unwrap_or(variance),
                "replay" => s.replay = v.parse().ok(),
                "backend" => {
                    s.backend = match v {
                        "cpu" => BackendPreference::Cpu,
                        "webgpu" => BackendPreference::WebGpu,
                        _ => BackendPreference::Auto,
                    }
                }
                _ => {}
            }
        }
        s.sampler = if kind == "ddpm" {
            SamplerConfig::Ddpm {
                variance,
                clip_x0: true,
            }
        } else {
            SamplerConfig::Ddim {
                steps: steps.max(1),
                eta: if eta.is_finite() { eta.clamp(0.0, 1.0) } else { 0.0 },
                clip_x0: true,
            }
        };
        s
    }

    /// The query string (with the leading `?`).
    pub fn to_query(&self) -> String {
        let sampler = match self.sampler {
            SamplerConfig::Ddpm { variance, .. } => format!("sampler=ddpm&variance={variance}"),
            SamplerConfig::Ddim { steps, eta, .. } => format!("sampler=ddim&steps={steps}&eta={eta}"),
        };
        let backend = match self.backend {
            BackendPreference::Auto => "",
            BackendPreference::WebGpu => "&backend=webgpu",
            BackendPreference::Cpu => "&backend=cpu",
        };
        let replay = self.replay.map(|k| format!("&replay={k}")).unwrap_or_default();
        format!(
            "?schedule={}&t={}&digit={}&seed={}&{sampler}{replay}{backend}",
            self.schedule, self.t, self.digit, self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            replay: Some(17),
        };
        assert_eq!(
            s.to_query(),
            "?schedule=cosine&t=999&digit=3&seed=42&sampler=ddpm&variance=beta&replay=17&backend=cpu"
        );
        assert_eq!(ViewState::from_query(&s.to_query(), 1000), s);
        let d = ViewState::from_query("?t=5000&eta=7&steps=0&bogus=1&seed=x", 1000);
        assert_eq!(d.t, 999);
        assert_eq!(d.seed, 1);
        assert_eq!(d.replay, None);
        assert_eq!(
            d.sampler,
            SamplerConfig::Ddim {
                steps: 1,
                eta: 1.0,
                clip_x0: true
            }
        );
        assert_eq!(ViewState::from_query("", 1000), ViewState::default());
    }

    #[test]
    fn the_backend_is_read_from_the_url_before_the_model_is_known() {
        assert_eq!(ViewState::parse("?t=3&backend=cpu").backend, BackendPreference::Cpu);
        assert_eq!(ViewState::parse("?backend=webgpu").backend, BackendPreference::WebGpu);
        assert_eq!(ViewState::parse("?backend=tpu").backend, BackendPreference::Auto);
        // Without a model, t and the steps are not clamped yet.
        assert_eq!(ViewState::parse("?t=5000").t, 5000);
        assert_eq!(ViewState::from_query("?t=5000", 1000).t, 999);
    }
}
