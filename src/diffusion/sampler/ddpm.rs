//! Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2), all T steps.

use super::{SamplerError, SamplerPlan, StepCoefs, check_start};
use crate::diffusion::schedule::NoiseSchedule;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The reverse-process variance σ_t² (Ho et al. §3.2: both give similar samples).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum VarianceKind {
    /// σ_t² = β_t, the upper bound (optimal for x_0 ~ N(0, I)).
    Beta,
    /// σ_t² = β̃_t, the lower bound (optimal for a single point x_0).
    #[default]
    BetaTilde,
}

impl VarianceKind {
    /// The name used on the command line and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            VarianceKind::Beta => "beta",
            VarianceKind::BetaTilde => "beta-tilde",
        }
    }

    /// log σ_t² as the variational bound uses it: for σ² = β the t = 0 entry is log β̃_1, as in
    /// the reference implementation (there is no noise at that step either way).
    pub fn log_variance(self, schedule: &NoiseSchedule, t: usize) -> f64 {
        match self {
            VarianceKind::BetaTilde => schedule.posterior_log_variance_clipped[t],
            VarianceKind::Beta if t == 0 => schedule.posterior_log_variance_clipped[0],
            VarianceKind::Beta => schedule.betas[t].ln(),
        }
    }
}

impl fmt::Display for VarianceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for VarianceKind {
    type Err = SamplerError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "beta" | "fixed-large" => Ok(VarianceKind::Beta),
            "beta-tilde" | "fixed-small" => Ok(VarianceKind::BetaTilde),
            _ => Err(SamplerError::UnknownName {
                what: "variance",
                name: s.to_string(),
                expected: "'beta' or 'beta-tilde'",
            }),
        }
    }
}

impl SamplerPlan {
    /// DDPM over every timestep T−1, …, 0 of `schedule`.
    pub fn ddpm(schedule: &NoiseSchedule, variance: VarianceKind, clip_x0: bool) -> Self {
        Self::ddpm_over(schedule, variance, clip_x0, schedule.timesteps() - 1)
    }

    /// SDEdit's DDPM: ancestral steps from `start_t` (the timestep the input was noised to) down to 0.
    pub fn ddpm_from(
        schedule: &NoiseSchedule,
        variance: VarianceKind,
        clip_x0: bool,
        start_t: usize,
    ) -> Result<Self, SamplerError> {
        check_start(schedule, start_t)?;
        Ok(Self::ddpm_over(schedule, variance, clip_x0, start_t))
    }

    fn ddpm_over(schedule: &NoiseSchedule, variance: VarianceKind, clip_x0: bool, start_t: usize) -> Self {
        let coefs = (0..=start_t)
            .rev()
            .map(|t| ddpm_step_coefs(schedule, variance, t))
            .collect();
        Self::from_coefs(coefs, clip_x0)
    }
}

fn ddpm_step_coefs(schedule: &NoiseSchedule, variance: VarianceKind, t: usize) -> StepCoefs {
    // x̂_0 from ε̂ (eq. 15 rearranged).
    let (x0_from_xt, x0_from_eps) = schedule.predict_x0_coefs(t);
    // μ̃_t(x_t, x̂_0) = coef1 · x̂_0 + coef2 · x_t   (eq. 7)
    // σ_t² = β_t or β̃_t, and no noise on the last step (Algorithm 2, line 3: z = 0 if t = 1).
    let sigma = if t == 0 {
        0.0
    } else {
        match variance {
            VarianceKind::Beta => schedule.betas[t],
            VarianceKind::BetaTilde => schedule.posterior_variance[t],
        }
        .sqrt()
    };
    StepCoefs {
        t,
        prev_t: t.checked_sub(1),
        alpha_bar: schedule.alpha_bar[t],
        alpha_bar_prev: schedule.alpha_bar_prev[t],
        x0_from_xt,
        x0_from_eps,
        c_x0: schedule.posterior_mean_coef1[t],
        c_xt: schedule.posterior_mean_coef2[t],
        c_eps: 0.0,
        sigma,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::sampler::apply_step;
    use burn::tensor::{Device, Tensor, TensorData};

    #[test]
    fn unclipped_ddpm_mean_equals_algorithm_2() {
        // Algorithm 2, line 4: x_{t−1} = 1/√α_t (x_t − β_t/√(1−ᾱ_t) ε̂) + σ_t z. Without clipping,
        // the posterior mean of x̂_0 must reduce to this (Ho et al. eq. 11).
        let s = NoiseSchedule::linear(1000).unwrap();
        let sampler = SamplerPlan::ddpm(&s, VarianceKind::Beta, false);
        let device = Device::flex();
        let (x, e, z) = (0.7f64, -0.3f64, 0.4f64);
        for index in [0usize, 500, 998, 999] {
            let t = sampler.timesteps()[index];
            let expect = (x - s.betas[t] / (1.0 - s.alpha_bar[t]).sqrt() * e) / s.alphas[t].sqrt()
                + if t > 0 { s.betas[t].sqrt() * z } else { 0.0 };
            let one = |v: f64| Tensor::<4>::from_data(TensorData::new(vec![v as f32], [1, 1, 1, 1]), &device);
            let out = apply_step(&sampler.coefs(index), false, one(x), one(e), Some(one(z)));
            let got: f32 = out.prev_sample.into_scalar();
            assert!((got as f64 - expect).abs() < 2e-5, "t={t}: {got} vs {expect}");
        }
    }

    #[test]
    fn variance_choices_and_last_step() {
        let s = NoiseSchedule::linear(1000).unwrap();
        let small = SamplerPlan::ddpm(&s, VarianceKind::BetaTilde, true);
        let large = SamplerPlan::ddpm(&s, VarianceKind::Beta, true);
        assert_eq!(small.timesteps().len(), 1000);
        assert_eq!(small.timesteps()[0], 999);
        // t = 999: β̃ ≈ 0.02 (diffusers' reference value), β = 0.02.
        assert!((small.coefs(0).sigma.powi(2) - 0.02).abs() < 1e-5);
        assert!((large.coefs(0).sigma.powi(2) - 0.02).abs() < 1e-12);
        // t = 487: β̃ = 0.00979 (diffusers' reference value).
        assert!((small.coefs(999 - 487).sigma.powi(2) - 0.00979).abs() < 1e-5);
        // Last step adds no noise and lands on x̂_0 (coef1 = 1, coef2 = 0 at t = 0).
        let last = small.coefs(999);
        assert_eq!((last.t, last.prev_t, last.sigma), (0, None, 0.0));
        assert!((last.c_x0 - 1.0).abs() < 1e-12 && last.c_xt.abs() < 1e-12);
        assert_eq!("beta".parse::<VarianceKind>(), Ok(VarianceKind::Beta));
        assert!("sigma".parse::<VarianceKind>().is_err());
    }
}
