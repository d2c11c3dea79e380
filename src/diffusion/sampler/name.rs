//! The one grammar of samplers, used by the CLI (`sample --sampler`, `eval --samplers`), the
//! evaluation's reports and the page's links, and the one place their settings are checked and
//! brought within a schedule:
//!
//! ```text
//! ddpm | ddpm-beta | ddpm-beta-tilde        DDPM over all T steps, σ² = β̃ (the default) or β
//! ddim | ddim<N> | ddim<N>-eta<E>           DDIM over N steps (default 50), η = E (default 0)
//! ```
//!
//! A sampler's settings can also come one at a time (`--steps`, `--eta`, `--variance` on the
//! command line; `steps=`, `eta=`, `variance=` in a link; the page's inputs):
//! [`SamplerConfig::with_setting`] checks each the same way.

use super::ddim::check_eta;
use super::{SamplerConfig, SamplerError, VarianceKind};
use std::str::FromStr;

/// One setting of a sampler, given on its own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerSetting {
    /// DDIM's number of steps.
    Steps(usize),
    /// DDIM's η.
    Eta(f64),
    /// DDPM's reverse variance.
    Variance(VarianceKind),
}

const EXPECTED: &str = "ddpm, ddpm-beta, ddim, ddimN or ddimN-etaE (e.g. ddim50-eta0.5)";

impl FromStr for SamplerConfig {
    type Err = SamplerError;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        let unknown = || SamplerError::UnknownName {
            what: "sampler",
            name: word.to_string(),
            expected: EXPECTED,
        };
        if let Some(rest) = word.strip_prefix("ddpm") {
            let variance = match rest {
                "" => VarianceKind::default(),
                _ => rest
                    .strip_prefix('-')
                    .ok_or_else(unknown)?
                    .parse()
                    .map_err(|_| unknown())?,
            };
            return Ok(SamplerConfig::Ddpm {
                variance,
                clip_x0: true,
            });
        }
        let rest = word.strip_prefix("ddim").ok_or_else(unknown)?;
        let (steps, eta) = match rest.split_once("-eta") {
            Some((steps, eta)) => (steps, Some(eta)),
            None => (rest, None),
        };
        let mut sampler = SamplerConfig::default();
        if !steps.is_empty() {
            let steps = steps.parse().map_err(|_| unknown())?;
            sampler = sampler.with_setting(SamplerSetting::Steps(steps))?;
        }
        if let Some(eta) = eta {
            let eta = eta.parse().map_err(|_| unknown())?;
            sampler = sampler.with_setting(SamplerSetting::Eta(eta))?;
        }
        Ok(sampler)
    }
}

impl SamplerConfig {
    /// The word [`FromStr`] reads back as this sampler (clipping is not part of the word).
    pub fn name(&self) -> String {
        match *self {
            SamplerConfig::Ddpm {
                variance: VarianceKind::BetaTilde,
                ..
            } => "ddpm".into(),
            SamplerConfig::Ddpm { variance, .. } => format!("ddpm-{variance}"),
            SamplerConfig::Ddim { steps, eta: 0.0, .. } => format!("ddim{steps}"),
            SamplerConfig::Ddim { steps, eta, .. } => format!("ddim{steps}-eta{eta}"),
        }
    }

    /// This sampler with one setting changed, checked: DDIM's steps at least 1, its η in [0, 1];
    /// a setting the sampler does not have is refused.
    pub fn with_setting(self, setting: SamplerSetting) -> Result<Self, SamplerError> {
        match (self, setting) {
            (SamplerConfig::Ddim { eta, clip_x0, .. }, SamplerSetting::Steps(steps)) => {
                if steps == 0 {
                    return Err(SamplerError::ZeroSteps);
                }
                Ok(SamplerConfig::Ddim { steps, eta, clip_x0 })
            }
            (SamplerConfig::Ddim { steps, clip_x0, .. }, SamplerSetting::Eta(eta)) => {
                check_eta(eta)?;
                Ok(SamplerConfig::Ddim { steps, eta, clip_x0 })
            }
            (SamplerConfig::Ddpm { clip_x0, .. }, SamplerSetting::Variance(variance)) => {
                Ok(SamplerConfig::Ddpm { variance, clip_x0 })
            }
            (sampler, setting) => Err(SamplerError::SettingNotFor {
                setting: setting.label(),
                sampler: sampler.family(),
            }),
        }
    }

    /// Brought within a schedule of `timesteps` steps (DDIM cannot take more steps than there
    /// are), with a line saying what changed when something did.
    pub fn within(self, timesteps: usize) -> (Self, Option<String>) {
        match self {
            SamplerConfig::Ddim { steps, eta, clip_x0 } if steps > timesteps.max(1) => (
                SamplerConfig::Ddim {
                    steps: timesteps.max(1),
                    eta,
                    clip_x0,
                },
                Some(format!(
                    "steps = {steps} is more than this model's {timesteps} timesteps; using {}",
                    timesteps.max(1)
                )),
            ),
            sampler => (sampler, None),
        }
    }

    /// The same sampler with x̂_0 left unclipped.
    pub fn without_clipping(self) -> Self {
        match self {
            SamplerConfig::Ddpm { variance, .. } => SamplerConfig::Ddpm {
                variance,
                clip_x0: false,
            },
            SamplerConfig::Ddim { steps, eta, .. } => SamplerConfig::Ddim {
                steps,
                eta,
                clip_x0: false,
            },
        }
    }

    /// "DDPM" or "DDIM".
    fn family(&self) -> &'static str {
        match self {
            SamplerConfig::Ddpm { .. } => "DDPM",
            SamplerConfig::Ddim { .. } => "DDIM",
        }
    }
}

impl SamplerSetting {
    fn label(&self) -> &'static str {
        match self {
            SamplerSetting::Steps(_) => "number of steps",
            SamplerSetting::Eta(_) => "η",
            SamplerSetting::Variance(_) => "variance choice",
        }
    }
}

/// The default sampler ([`SamplerConfig::default`]) as a word, for help texts and defaults.
pub const DEFAULT_SAMPLER_NAME: &str = "ddim50";

#[cfg(test)]
mod tests {
    use super::*;

    fn ddim(steps: usize, eta: f64) -> SamplerConfig {
        SamplerConfig::Ddim {
            steps,
            eta,
            clip_x0: true,
        }
    }

    #[test]
    fn every_word_of_the_grammar_reads_as_its_sampler_and_back() {
        let ddpm = |variance| SamplerConfig::Ddpm {
            variance,
            clip_x0: true,
        };
        for (word, sampler, canonical) in [
            ("ddpm", ddpm(VarianceKind::BetaTilde), "ddpm"),
            ("ddpm-beta-tilde", ddpm(VarianceKind::BetaTilde), "ddpm"),
            ("ddpm-beta", ddpm(VarianceKind::Beta), "ddpm-beta"),
            ("ddim", ddim(50, 0.0), "ddim50"),
            ("ddim50", ddim(50, 0.0), "ddim50"),
            ("ddim7", ddim(7, 0.0), "ddim7"),
            ("ddim100-eta0.5", ddim(100, 0.5), "ddim100-eta0.5"),
            ("ddim-eta1", ddim(50, 1.0), "ddim50-eta1"),
        ] {
            assert_eq!(word.parse::<SamplerConfig>(), Ok(sampler), "{word}");
            assert_eq!(sampler.name(), canonical);
            assert_eq!(canonical.parse::<SamplerConfig>(), Ok(sampler));
        }
        assert_eq!(
            DEFAULT_SAMPLER_NAME.parse::<SamplerConfig>(),
            Ok(SamplerConfig::default())
        );
    }

    #[test]
    fn bad_words_and_settings_are_refused_with_the_reason() {
        for word in [
            "",
            "ddim-5",
            "ddimx",
            "ddim50eta1",
            "plms",
            "ddpm-sigma",
            "ddpmbeta",
            "ddim50-eta",
        ] {
            assert!(
                matches!(word.parse::<SamplerConfig>(), Err(SamplerError::UnknownName { .. })),
                "{word}"
            );
        }
        assert_eq!("ddim0".parse::<SamplerConfig>(), Err(SamplerError::ZeroSteps));
        assert_eq!(
            "ddim50-eta1.5".parse::<SamplerConfig>(),
            Err(SamplerError::EtaOutOfRange(1.5))
        );
        assert!(matches!(
            "ddim50-etaNaN".parse::<SamplerConfig>(),
            Err(SamplerError::EtaOutOfRange(e)) if e.is_nan()
        ));
        let ddpm: SamplerConfig = "ddpm".parse().unwrap();
        assert!(matches!(
            ddpm.with_setting(SamplerSetting::Steps(20)),
            Err(SamplerError::SettingNotFor { sampler: "DDPM", .. })
        ));
        assert!(
            SamplerConfig::default()
                .with_setting(SamplerSetting::Variance(VarianceKind::Beta))
                .is_err()
        );
        assert_eq!(
            SamplerConfig::default().with_setting(SamplerSetting::Eta(-0.1)),
            Err(SamplerError::EtaOutOfRange(-0.1))
        );
    }

    #[test]
    fn ddim_steps_are_brought_within_the_schedule_with_a_notice() {
        let (sampler, notice) = ddim(2000, 0.3).within(1000);
        assert_eq!(sampler, ddim(1000, 0.3));
        assert_eq!(
            notice.as_deref(),
            Some("steps = 2000 is more than this model's 1000 timesteps; using 1000")
        );
        assert_eq!(ddim(50, 0.0).within(1000), (ddim(50, 0.0), None));
        let ddpm: SamplerConfig = "ddpm-beta".parse().unwrap();
        assert_eq!(ddpm.within(10), (ddpm, None));
    }
}
