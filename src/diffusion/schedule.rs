//! The noise schedule β_1 … β_T and every number derived from it, as host-side `f64`s.
//!
//! The schedule is computed once, on the CPU, in double precision (as diffusers' and candle's
//! schedulers do): a sampler reads its coefficients from here and hands them to the device as
//! scalars, so nothing is ever read back from the GPU to take a step. Indices are 0-based:
//! `t = 0` is the paper's t = 1 (the first, least noisy step) and `t = T − 1` the last.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The number of diffusion steps used by Ho et al. (2020).
pub const DEFAULT_TIMESTEPS: usize = 1000;
/// First β of the linear schedule (Ho et al. 2020, §4).
pub const LINEAR_BETA_START: f64 = 1e-4;
/// Last β of the linear schedule (Ho et al. 2020, §4).
pub const LINEAR_BETA_END: f64 = 0.02;
/// Offset `s` of the cosine schedule (Nichol & Dhariwal 2021, eq. 17).
pub const COSINE_OFFSET: f64 = 0.008;
/// The most timesteps a schedule may have (Ho et al. use 1,000; continuous-time limits are
/// approached well before 100,000).
pub const MAX_TIMESTEPS: usize = 100_000;
/// Largest β the cosine schedule allows, to avoid a singularity at t = T (Nichol & Dhariwal §3.2).
pub const COSINE_MAX_BETA: f64 = 0.999;

/// Errors in building or indexing a schedule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// A schedule needs at least one step.
    #[error("a schedule needs at least one timestep (got 0)")]
    NoTimesteps,
    /// More timesteps than [`MAX_TIMESTEPS`].
    #[error("{0} timesteps is above the bound of {MAX_TIMESTEPS}")]
    TooManyTimesteps(usize),
    /// A timestep outside `0..T`.
    #[error("timestep {t} is out of range: this schedule has t = 0..{}", .timesteps - 1)]
    TimestepOutOfRange {
        /// The offending timestep.
        t: usize,
        /// T, the number of steps.
        timesteps: usize,
    },
    /// A β outside (0, 1).
    #[error("beta at t = {t} is {beta}, outside (0, 1)")]
    InvalidBeta {
        /// Where.
        t: usize,
        /// What.
        beta: f64,
    },
    /// An unknown schedule name.
    #[error("unknown schedule '{0}': expected 'linear' or 'cosine'")]
    UnknownKind(String),
}

/// Which β schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// β linear from 1e-4 to 0.02 (Ho et al. 2020).
    #[default]
    Linear,
    /// ᾱ_t = f(t)/f(0), f(t) = cos²(((t/T + s)/(1 + s))·π/2) (Nichol & Dhariwal 2021, eq. 17).
    Cosine,
}

impl ScheduleKind {
    /// The name used on the command line, in JSON and in URLs.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScheduleKind {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "linear" => Ok(ScheduleKind::Linear),
            "cosine" => Ok(ScheduleKind::Cosine),
            _ => Err(ScheduleError::UnknownKind(s.to_string())),
        }
    }
}

/// A β schedule with every derived quantity precomputed, indexed by `t` in `0..T`.
#[derive(Clone, Debug, PartialEq)]
pub struct NoiseSchedule {
    /// Which schedule produced the βs.
    pub kind: ScheduleKind,
    /// β_t, the variance of the noise added at step t.
    pub betas: Vec<f64>,
    /// α_t = 1 − β_t.
    pub alphas: Vec<f64>,
    /// ᾱ_t = ∏_{s ≤ t} α_s.
    pub alpha_bar: Vec<f64>,
    /// ᾱ_{t−1}, with ᾱ_{−1} = 1.
    pub alpha_bar_prev: Vec<f64>,
    /// β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), the variance of q(x_{t−1} | x_t, x_0) (Ho et al. eq. 7).
    pub posterior_variance: Vec<f64>,
    /// log β̃_t with the t = 0 entry (log 0) replaced by log β̃_1, as the reference code does.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// The coefficient of x_0 in μ̃_t(x_t, x_0) (Ho et al. eq. 7): β_t √ᾱ_{t−1} / (1 − ᾱ_t).
    pub posterior_mean_coef1: Vec<f64>,
    /// The coefficient of x_t in μ̃_t(x_t, x_0) (Ho et al. eq. 7): (1 − ᾱ_{t−1}) √α_t / (1 − ᾱ_t).
    pub posterior_mean_coef2: Vec<f64>,
}

/// One row of the schedule: everything the math panel and `schedule --json` show for a t.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRow {
    /// The timestep (0-based).
    pub t: usize,
    /// β_t.
    pub beta: f64,
    /// α_t.
    pub alpha: f64,
    /// ᾱ_t.
    pub alpha_bar: f64,
    /// √ᾱ_t, the signal coefficient of q(x_t | x_0).
    pub sqrt_alpha_bar: f64,
    /// √(1 − ᾱ_t), the noise coefficient of q(x_t | x_0).
    pub sqrt_one_minus_alpha_bar: f64,
    /// β̃_t.
    pub posterior_variance: f64,
    /// log β̃_t, clipped at t = 0.
    pub posterior_log_variance_clipped: f64,
    /// Coefficient of x̂_0 in the posterior mean.
    pub posterior_mean_coef1: f64,
    /// Coefficient of x_t in the posterior mean.
    pub posterior_mean_coef2: f64,
    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t).
    pub snr: f64,
}

impl NoiseSchedule {
    /// The schedule of `kind` with `timesteps` steps.
    pub fn new(kind: ScheduleKind, timesteps: usize) -> Result<Self, ScheduleError> {
        if timesteps > MAX_TIMESTEPS {
            return Err(ScheduleError::TooManyTimesteps(timesteps));
        }
        match kind {
            ScheduleKind::Linear => Self::linear(timesteps),
            ScheduleKind::Cosine => Self::cosine(timesteps),
        }
    }

    /// β_t linear from 1e-4 to 0.02 over `timesteps` steps (Ho et al. 2020).
    pub fn linear(timesteps: usize) -> Result<Self, ScheduleError> {
        if timesteps == 0 {
            return Err(ScheduleError::NoTimesteps);
        }
        let betas = if timesteps == 1 {
            vec![LINEAR_BETA_START]
        } else {
            let step = (LINEAR_BETA_END - LINEAR_BETA_START) / (timesteps - 1) as f64;
            (0..timesteps).map(|i| LINEAR_BETA_START + step * i as f64).collect()
        };
        Self::from_betas(ScheduleKind::Linear, betas)
    }

    /// The cosine schedule (Nichol & Dhariwal 2021, eq. 17), with
    /// β_t = min(1 − ᾱ(t+1)/ᾱ(t), 0.999) taken from the continuous ᾱ.
    pub fn cosine(timesteps: usize) -> Result<Self, ScheduleError> {
        if timesteps == 0 {
            return Err(ScheduleError::NoTimesteps);
        }
        let f = |t: f64| {
            ((t / timesteps as f64 + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * std::f64::consts::FRAC_PI_2)
                .cos()
                .powi(2)
        };
        let betas = (0..timesteps)
            .map(|i| (1.0 - f(i as f64 + 1.0) / f(i as f64)).min(COSINE_MAX_BETA))
            .collect();
        Self::from_betas(ScheduleKind::Cosine, betas)
    }

    /// Derives every quantity from the βs.
    pub fn from_betas(kind: ScheduleKind, betas: Vec<f64>) -> Result<Self, ScheduleError> {
        if betas.is_empty() {
            return Err(ScheduleError::NoTimesteps);
        }
        if let Some((t, &beta)) = betas.iter().enumerate().find(|(_, b)| !(**b > 0.0 && **b < 1.0)) {
            return Err(ScheduleError::InvalidBeta { t, beta });
        }
        let alphas: Vec<f64> = betas.iter().map(|b| 1.0 - b).collect();
        let alpha_bar: Vec<f64> = alphas
            .iter()
            .scan(1.0, |acc, a| {
                *acc *= a;
                Some(*acc)
            })
            .collect();
        let alpha_bar_prev: Vec<f64> = std::iter::once(1.0)
            .chain(alpha_bar[..alpha_bar.len() - 1].iter().copied())
            .collect();
        let n = betas.len();
        let mut posterior_variance = Vec::with_capacity(n);
        let mut posterior_mean_coef1 = Vec::with_capacity(n);
        let mut posterior_mean_coef2 = Vec::with_capacity(n);
        for t in 0..n {
            let one_minus_ab = 1.0 - alpha_bar[t];
            posterior_variance.push(betas[t] * (1.0 - alpha_bar_prev[t]) / one_minus_ab);
            posterior_mean_coef1.push(betas[t] * alpha_bar_prev[t].sqrt() / one_minus_ab);
            posterior_mean_coef2.push((1.0 - alpha_bar_prev[t]) * alphas[t].sqrt() / one_minus_ab);
        }
        // β̃_0 = 0, so its log is −∞: the reference implementations use log β̃_1 there.
        let posterior_log_variance_clipped = (0..n)
            .map(|t| {
                let v = if t == 0 && n > 1 {
                    posterior_variance[1]
                } else {
                    posterior_variance[t]
                };
                v.ln()
            })
            .collect();
        Ok(Self {
            kind,
            betas,
            alphas,
            alpha_bar,
            alpha_bar_prev,
            posterior_variance,
            posterior_log_variance_clipped,
            posterior_mean_coef1,
            posterior_mean_coef2,
        })
    }

    /// T, the number of diffusion steps.
    pub fn timesteps(&self) -> usize {
        self.betas.len()
    }

    /// `Ok` when `t` is a valid timestep of this schedule.
    pub fn check_t(&self, t: usize) -> Result<(), ScheduleError> {
        if t < self.timesteps() {
            Ok(())
        } else {
            Err(ScheduleError::TimestepOutOfRange {
                t,
                timesteps: self.timesteps(),
            })
        }
    }

    /// √ᾱ_t and √(1 − ᾱ_t): the coefficients of x_0 and ε in q(x_t | x_0) (Ho et al. eq. 4).
    pub fn q_sample_coefs(&self, t: usize) -> (f64, f64) {
        (self.alpha_bar[t].sqrt(), (1.0 - self.alpha_bar[t]).sqrt())
    }

    /// √(1/ᾱ_t) and √(1/ᾱ_t − 1): x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε (eq. 4 solved for x_0).
    pub fn predict_x0_coefs(&self, t: usize) -> (f64, f64) {
        let ab = self.alpha_bar[t];
        ((1.0 / ab).sqrt(), (1.0 / ab - 1.0).sqrt())
    }

    /// Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t).
    pub fn snr(&self, t: usize) -> f64 {
        self.alpha_bar[t] / (1.0 - self.alpha_bar[t])
    }

    /// The timestep whose ᾱ_t is nearest to `alpha_bar`. x_t = √ᾱ_t x_0 + √(1−ᾱ_t) ε depends on t
    /// only through ᾱ_t, so this maps a noise level of another schedule onto this one: the x_t a
    /// cosine schedule makes at t is the x_t this (say linear) schedule makes at `nearest_t(ᾱ)`,
    /// up to the gap between neighbouring ᾱs.
    pub fn nearest_t(&self, alpha_bar: f64) -> usize {
        // ᾱ_t falls strictly with t: the first t at or below the target, or the one before it.
        let after = self.alpha_bar.partition_point(|&a| a > alpha_bar);
        match after {
            0 => 0,
            t if t == self.timesteps() => t - 1,
            t if (self.alpha_bar[t - 1] - alpha_bar) <= (alpha_bar - self.alpha_bar[t]) => t - 1,
            t => t,
        }
    }

    /// Everything about timestep `t` in one row.
    pub fn row(&self, t: usize) -> Result<ScheduleRow, ScheduleError> {
        self.check_t(t)?;
        let (sqrt_alpha_bar, sqrt_one_minus_alpha_bar) = self.q_sample_coefs(t);
        Ok(ScheduleRow {
            t,
            beta: self.betas[t],
            alpha: self.alphas[t],
            alpha_bar: self.alpha_bar[t],
            sqrt_alpha_bar,
            sqrt_one_minus_alpha_bar,
            posterior_variance: self.posterior_variance[t],
            posterior_log_variance_clipped: self.posterior_log_variance_clipped[t],
            posterior_mean_coef1: self.posterior_mean_coef1[t],
            posterior_mean_coef2: self.posterior_mean_coef2[t],
            snr: self.snr(t),
        })
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
