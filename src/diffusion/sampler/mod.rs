//! Reverse-process samplers: one file per sampler, one plan type, one shared reverse-step update.
//!
//! Every sampler here writes x_{t−1} in the same linear form
//!
//! ```text
//! x̂_0     = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂          (Ho et al. eq. 4 solved for x_0; optionally clipped)
//! x_{t−1} = c_x0 · x̂_0 + c_xt · x_t + c_eps · ε̂ + σ_t z
//! ```
//!
//! and differs only in the host-side coefficients ([`StepCoefs`]): DDPM takes the posterior mean
//! of q(x_{t−1} | x_t, x̂_0) (Ho et al. eq. 7, 11), DDIM the generalised update of Song et al.
//! (eq. 12). The coefficients are `f64`s computed on the CPU, so a step never reads the GPU. A
//! sampler is therefore one type, [`SamplerPlan`] (its timesteps and their coefficients), whose
//! constructors live one file per sampler: `ddpm.rs` and `ddim.rs`.
//!
//! When x̂_0 is clipped to [−1, 1], ε̂ is re-derived from the clipped x̂_0, ε̂ = (√(1/ᾱ_t) x_t − x̂_0)
//! / √(1/ᾱ_t − 1), before it enters the update (as guided-diffusion's DDIM does; diffusers keeps the
//! raw ε̂). The pair (x̂_0, ε̂) then still satisfies x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε̂, so every sampler
//! written in it is the same posterior step it is without clipping — DDIM with η = 1 stays DDPM with
//! σ² = β̃, clipped or not (tested below).
//!

pub mod chain;
pub mod ddim;
pub mod ddpm;
pub mod fused;
pub mod guidance;
pub mod interpolate;
pub mod name;

pub use chain::{ChainStep, EpsModel, ReverseChain, lockstep};
pub use ddpm::VarianceKind;
pub use guidance::{ConditionalEpsModel, Guidance, Guided};
pub use name::{DEFAULT_SAMPLER_NAME, SamplerSetting};

use crate::diffusion::schedule::NoiseSchedule;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Errors in configuring a sampler.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplerError {
    /// Zero sampling steps.
    #[error("the number of sampling steps must be at least 1 (got 0)")]
    ZeroSteps,
    /// More sampling steps than the schedule has timesteps.
    #[error("{steps} sampling steps is more than the schedule's {timesteps} timesteps")]
    TooManySteps {
        /// Requested.
        steps: usize,
        /// Available.
        timesteps: usize,
    },
    /// η outside [0, 1].
    #[error("eta must be in [0, 1] (got {0})")]
    EtaOutOfRange(f64),
    /// A start timestep outside the schedule.
    #[error("the start timestep {t} is outside 0..{timesteps}")]
    StartOutOfRange {
        /// Requested.
        t: usize,
        /// The schedule's T.
        timesteps: usize,
    },
    /// Unknown sampler or variance name.
    #[error("unknown {what} '{name}': expected {expected}")]
    UnknownName {
        /// What was being parsed.
        what: &'static str,
        /// What was given.
        name: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A setting given to a sampler that has no such setting (steps to DDPM, a variance to DDIM).
    #[error("{sampler} takes no {setting}")]
    SettingNotFor {
        /// The setting.
        setting: &'static str,
        /// The sampler's family.
        sampler: &'static str,
    },
    /// A guidance scale outside [0, MAX_GUIDANCE].
    #[error("the guidance scale w must be in [0, {max}] (got {0})", max = guidance::MAX_GUIDANCE)]
    GuidanceOutOfRange(f64),
    /// A class asked of a model trained without classes.
    #[error("this model is unconditional (trained without classes): it cannot be asked for a class")]
    NotConditional,
    /// A class index the model does not have.
    #[error("class {class} is out of range: the model has classes 0 to {}", .classes - 1)]
    ClassOutOfRange {
        /// Asked for.
        class: usize,
        /// The model's number of classes.
        classes: usize,
    },
    /// A class name the model does not have.
    #[error("unknown class '{name}': expected an index or one of {names}")]
    UnknownClass {
        /// Asked for.
        name: String,
        /// The model's class names.
        names: String,
    },
}

/// The coefficients of one reverse step t → t_prev, in the common form of this module's docs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepCoefs {
    /// The timestep being denoised.
    pub t: usize,
    /// The timestep reached, `None` for the final step to x_0.
    pub prev_t: Option<usize>,
    /// ᾱ_t.
    pub alpha_bar: f64,
    /// ᾱ at `prev_t` (1 for the final step).
    pub alpha_bar_prev: f64,
    /// √(1/ᾱ_t): coefficient of x_t in x̂_0.
    pub x0_from_xt: f64,
    /// √(1/ᾱ_t − 1): coefficient of −ε̂ in x̂_0.
    pub x0_from_eps: f64,
    /// Coefficient of x̂_0 in x_{t−1}.
    pub c_x0: f64,
    /// Coefficient of x_t in x_{t−1}.
    pub c_xt: f64,
    /// Coefficient of ε̂ in x_{t−1}.
    pub c_eps: f64,
    /// Standard deviation σ_t of the noise added (0 on the final step).
    pub sigma: f64,
}

/// What one reverse step produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// x_{t−1}, shape `[batch, channels, height, width]`.
    pub prev_sample: Tensor<4>,
    /// x̂_0, the model's prediction of the clean image, same shape.
    pub pred_x0: Tensor<4>,
}

/// A sampler's plan: the descending timesteps it visits and the coefficients of each step (the
/// constructors are in `ddpm.rs` and `ddim.rs`). Every sampler is one of these: they differ only in
/// their numbers.
#[derive(Clone, Debug)]
pub struct SamplerPlan {
    timesteps: Vec<usize>,
    coefs: Vec<StepCoefs>,
    clip_x0: bool,
}

impl SamplerPlan {
    /// The plan that takes the steps `coefs` in order (their `t` must descend).
    fn from_coefs(coefs: Vec<StepCoefs>, clip_x0: bool) -> Self {
        Self {
            timesteps: coefs.iter().map(|c| c.t).collect(),
            coefs,
            clip_x0,
        }
    }

    /// The timesteps visited, in the order they are denoised (descending).
    pub fn timesteps(&self) -> &[usize] {
        &self.timesteps
    }

    /// The coefficients of step number `index` (0 is the first, noisiest step).
    pub fn coefs(&self, index: usize) -> StepCoefs {
        self.coefs[index]
    }

    /// Whether x̂_0 is clipped to [−1, 1] before it is used.
    pub fn clip_x0(&self) -> bool {
        self.clip_x0
    }

    /// One reverse step: x_t and the model's ε̂ → (x_{t−1}, x̂_0).
    ///
    /// `noise` is z ~ N(0, I) for the step; it is ignored where σ_t = 0.
    ///
    /// # Shapes
    /// - `x_t`, `eps`, `noise`: `[batch, channels, height, width]`
    pub fn step(&self, index: usize, x_t: Tensor<4>, eps: Tensor<4>, noise: Option<Tensor<4>>) -> StepOutput {
        apply_step(&self.coefs(index), self.clip_x0, x_t, eps, noise)
    }
}

/// The shared reverse-step update (the module docs' two equations), fused into one backend operation:
/// the WGSL kernel of `shaders/reverse_step.wgsl` on the GPU, composed tensor ops on the CPU.
///
/// # Shapes
/// - `x_t`, `eps`, `noise`: `[batch, channels, height, width]`
pub fn apply_step(
    c: &StepCoefs,
    clip_x0: bool,
    x_t: Tensor<4>,
    eps: Tensor<4>,
    noise: Option<Tensor<4>>,
) -> StepOutput {
    let (prev, pred_x0) = fused::reverse_step(c, clip_x0, x_t, eps, noise); // [b, c, h, w] each
    StepOutput {
        prev_sample: prev,
        pred_x0,
    }
}

/// Checks that a chain can start at `start_t`.
fn check_start(schedule: &NoiseSchedule, start_t: usize) -> Result<(), SamplerError> {
    if start_t >= schedule.timesteps() {
        return Err(SamplerError::StartOutOfRange {
            t: start_t,
            timesteps: schedule.timesteps(),
        });
    }
    Ok(())
}

/// Which sampler, with its settings: what the CLI and the web app choose.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "sampler", rename_all = "lowercase")]
pub enum SamplerConfig {
    /// Ancestral sampling over all T steps (Ho et al. Algorithm 2).
    Ddpm {
        /// σ_t² = β_t or β̃_t.
        variance: VarianceKind,
        /// Clip x̂_0 to [−1, 1].
        clip_x0: bool,
    },
    /// DDIM over a trailing sub-sequence of `steps` timesteps (Song et al. 2021).
    Ddim {
        /// Number of steps.
        steps: usize,
        /// η: 0 is deterministic, 1 matches DDPM's σ = β̃.
        eta: f64,
        /// Clip x̂_0 to [−1, 1].
        clip_x0: bool,
    },
}

/// Steps of the default DDIM sampler.
pub const DEFAULT_DDIM_STEPS: usize = 50;

impl Default for SamplerConfig {
    /// The project's default sampler everywhere (CLI, app, training grids): deterministic DDIM
    /// with 50 steps and x̂_0 clipped.
    fn default() -> Self {
        SamplerConfig::Ddim {
            steps: DEFAULT_DDIM_STEPS,
            eta: 0.0,
            clip_x0: true,
        }
    }
}

impl SamplerConfig {
    /// The default sampler, with at most `timesteps` steps (a schedule shorter than the default).
    pub fn default_for(timesteps: usize) -> Self {
        match Self::default() {
            SamplerConfig::Ddim { steps, eta, clip_x0 } => SamplerConfig::Ddim {
                steps: steps.min(timesteps),
                eta,
                clip_x0,
            },
            ddpm => ddpm,
        }
    }

    /// Builds the sampler over `schedule`, validating the settings.
    pub fn build(&self, schedule: &NoiseSchedule) -> Result<SamplerPlan, SamplerError> {
        match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => Ok(SamplerPlan::ddpm(schedule, variance, clip_x0)),
            SamplerConfig::Ddim { steps, eta, clip_x0 } => SamplerPlan::ddim(schedule, steps, eta, clip_x0),
        }
    }

    /// Builds the sampler for a chain whose first step denoises exactly `start_t` (SDEdit).
    pub fn build_starting_at(&self, schedule: &NoiseSchedule, start_t: usize) -> Result<SamplerPlan, SamplerError> {
        match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => SamplerPlan::ddpm_from(schedule, variance, clip_x0, start_t),
            SamplerConfig::Ddim { steps, eta, clip_x0 } => {
                SamplerPlan::ddim_from(schedule, steps, eta, clip_x0, start_t)
            }
        }
    }
}

impl std::fmt::Display for SamplerConfig {
    /// In the papers' words: "DDPM, σ² = β̃", "DDIM-50, η = 0" (clipping is on by default and only
    /// named when off).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let clip_x0 = match *self {
            SamplerConfig::Ddpm { variance, clip_x0 } => {
                let symbol = match variance {
                    VarianceKind::Beta => "β",
                    VarianceKind::BetaTilde => "β̃",
                };
                write!(f, "DDPM, σ² = {symbol}")?;
                clip_x0
            }
            SamplerConfig::Ddim { steps, eta, clip_x0 } => {
                write!(f, "DDIM-{steps}, η = {eta}")?;
                clip_x0
            }
        };
        if clip_x0 {
            Ok(())
        } else {
            f.write_str(", x̂₀ unclipped")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn sampler_names_read_as_in_the_papers() {
        let ddpm = |variance| SamplerConfig::Ddpm {
            variance,
            clip_x0: true,
        };
        assert_eq!(ddpm(VarianceKind::BetaTilde).to_string(), "DDPM, σ² = β̃");
        assert_eq!(ddpm(VarianceKind::Beta).to_string(), "DDPM, σ² = β");
        let ddim = SamplerConfig::Ddim {
            steps: 50,
            eta: 0.5,
            clip_x0: false,
        };
        assert_eq!(ddim.to_string(), "DDIM-50, η = 0.5, x̂₀ unclipped");
        assert_eq!(SamplerConfig::default().to_string(), "DDIM-50, η = 0");
    }

    #[test]
    fn apply_step_is_the_documented_linear_form() {
        let device = Device::flex();
        let c = StepCoefs {
            t: 5,
            prev_t: Some(4),
            alpha_bar: 0.25,
            alpha_bar_prev: 0.5,
            x0_from_xt: 2.0,
            x0_from_eps: 3.0f64.sqrt(),
            c_x0: 0.5,
            c_xt: 0.25,
            c_eps: 0.125,
            sigma: 0.1,
        };
        let t = |v: f32| Tensor::<4>::from_data(TensorData::new(vec![v], [1, 1, 1, 1]), &device);
        // x_t = 1, ε̂ = 0.5, z = 2 → x̂_0 = 2 − 0.5·√3 = 1.1339746; unclipped
        // x_{t-1} = 0.5·1.1339746 + 0.25·1 + 0.125·0.5 + 0.1·2 = 1.0794873.
        let out = apply_step(&c, false, t(1.0), t(0.5), Some(t(2.0)));
        let x0: f32 = out.pred_x0.into_scalar();
        let prev: f32 = out.prev_sample.into_scalar();
        assert!((x0 - 1.133_974_6).abs() < 1e-6);
        assert!((prev - 1.079_487_3).abs() < 1e-6);
        // Clipped: x̂_0 = 1 and ε̂ = (2·1 − 1)/√3 = 0.5773503 → x_{t-1} = 0.5 + 0.25 + 0.125·0.5773503
        // + 0.2 = 1.0221688.
        let out = apply_step(&c, true, t(1.0), t(0.5), Some(t(2.0)));
        assert!((out.prev_sample.into_scalar::<f32>() - 1.022_168_8).abs() < 1e-6);
    }

    #[test]
    fn clipped_ddim_with_eta_one_is_clipped_ddpm() {
        // Song et al. §4.1: DDIM with η = 1 over every timestep is DDPM with σ² = β̃. With x̂_0
        // clipped the identity must survive: same x_t, ε̂ and z give the same x_{t−1}.
        let device = Device::flex();
        let s = NoiseSchedule::linear(1000).unwrap();
        let ddim = SamplerConfig::Ddim {
            steps: 1000,
            eta: 1.0,
            clip_x0: true,
        }
        .build(&s)
        .unwrap();
        let ddpm = SamplerConfig::Ddpm {
            variance: VarianceKind::BetaTilde,
            clip_x0: true,
        }
        .build(&s)
        .unwrap();
        let t = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, 2, 2]), &device);
        // x_t and ε̂ whose x̂_0 lies far outside [−1, 1] (and one pixel inside).
        let (x_t, eps, z) = (
            vec![2.5f32, -2.0, 0.3, 1.8],
            vec![-0.8f32, 0.9, 0.1, 2.5],
            vec![0.5f32, -1.0, 0.2, 0.0],
        );
        for index in [100usize, 500, 900, 990] {
            let a = ddim.step(index, t(x_t.clone()), t(eps.clone()), Some(t(z.clone())));
            let b = ddpm.step(index, t(x_t.clone()), t(eps.clone()), Some(t(z.clone())));
            let (a, b) = (a.prev_sample.into_data(), b.prev_sample.into_data());
            for (x, y) in a.as_slice::<f32>().unwrap().iter().zip(b.as_slice::<f32>().unwrap()) {
                assert!((x - y).abs() < 2e-5, "step {index}: DDIM {x} vs DDPM {y}");
            }
        }
    }
}
