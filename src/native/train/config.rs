//! The training recipe: what `train.json` and a checkpoint's `state.json` record.

use crate::diffusion::schedule::{DEFAULT_TIMESTEPS, NoiseSchedule, ScheduleKind};
use crate::model::UNetConfig;
use crate::model::weights::DiffusionConfig;
use serde::{Deserialize, Serialize};

use super::TrainError;

/// The training recipe; saved in `train.json` beside checkpoints so a run can be reproduced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The network.
    pub unet: UNetConfig,
    /// The β schedule.
    pub schedule: ScheduleKind,
    /// T.
    pub timesteps: usize,
    /// Total optimisation steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak Adam learning rate.
    pub lr: f64,
    /// Linear warm-up steps to the peak learning rate.
    pub warmup: usize,
    /// EMA decay of the exported weights.
    pub ema_decay: f64,
    /// Seed of data order, timesteps and noise.
    pub seed: u64,
    /// Write a sample grid every this many steps (0: never).
    pub sample_every: usize,
    /// Write a checkpoint every this many steps.
    pub checkpoint_every: usize,
    /// Log loss to `loss.csv` every this many steps.
    pub log_every: usize,
    /// Rescale the gradients so their global L2 norm is at most this (Ho et al. clip at 1.0);
    /// `None`: no clipping (runs recorded before clipping existed read as `None`).
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// How the per-image losses are weighted over t.
    #[serde(default)]
    pub loss_weighting: LossWeighting,
}

impl Default for TrainConfig {
    /// The project's recipe: Ho et al.'s (linear β, T = 1000, Adam, warm-up, EMA 0.999, clipping at
    /// 1.0, L_simple) at a size a CPU can train — the one `ddpm train` uses when given no flags.
    fn default() -> Self {
        Self {
            unet: UNetConfig::new(),
            schedule: ScheduleKind::Linear,
            timesteps: DEFAULT_TIMESTEPS,
            steps: 20_000,
            batch: 64,
            lr: 2e-4,
            warmup: 200,
            ema_decay: 0.999,
            seed: 0,
            sample_every: 1000,
            checkpoint_every: 500,
            log_every: 10,
            grad_clip: Some(1.0),
            loss_weighting: LossWeighting::Simple,
        }
    }
}

/// The weight w_t of each image's ‖ε − ε̂‖² in the training loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LossWeighting {
    /// w_t = 1: Ho et al.'s L_simple (eq. 14).
    #[default]
    Simple,
    /// w_t = min(SNR(t), γ) / SNR(t): Min-SNR-γ for ε-prediction (Hang et al. 2023, eq. 10),
    /// which down-weights the low-noise steps whose gradients conflict with the rest.
    MinSnr {
        /// γ (the paper's choice is 5).
        gamma: f64,
    },
}

impl LossWeighting {
    /// w_t for each timestep of a batch.
    pub fn weights(self, schedule: &NoiseSchedule, t: &[usize]) -> Vec<f64> {
        match self {
            LossWeighting::Simple => vec![1.0; t.len()],
            LossWeighting::MinSnr { gamma } => t
                .iter()
                .map(|&t| {
                    let snr = schedule.snr(t);
                    snr.min(gamma) / snr
                })
                .collect(),
        }
    }
}

impl TrainConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Settings(m.to_string()));
        if self.steps == 0 {
            return bad("the number of steps must be at least 1");
        }
        if self.batch == 0 {
            return bad("the batch size must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("the learning rate must be a positive number");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("the EMA decay must be in [0, 1)");
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("the checkpoint and log intervals must be at least 1");
        }
        if self.grad_clip.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("the gradient-clipping norm must be a positive number");
        }
        if let LossWeighting::MinSnr { gamma } = self.loss_weighting
            && !(gamma > 0.0 && gamma.is_finite())
        {
            return bad("Min-SNR's γ must be a positive number");
        }
        self.unet.validate().map_err(|e| TrainError::Settings(e.to_string()))
    }

    /// Whether `other` trains the same way: everything but the length of the run, how often it
    /// samples, checkpoints and logs, and the gradient clipping (which a resumed run may turn on,
    /// as the continuation of the shipped weights did).
    pub fn same_recipe(&self, other: &TrainConfig) -> bool {
        let normalise = |c: &TrainConfig| TrainConfig {
            steps: 0,
            sample_every: 0,
            checkpoint_every: 1,
            log_every: 1,
            grad_clip: None,
            ..c.clone()
        };
        normalise(self) == normalise(other)
    }

    /// The `config.json` of the exported model.
    pub fn diffusion_config(&self) -> DiffusionConfig {
        DiffusionConfig {
            unet: self.unet.clone(),
            schedule: self.schedule,
            timesteps: self.timesteps,
        }
    }

    /// Learning rate at `step`: linear warm-up, then constant (as Ho et al.).
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup == 0 {
            self.lr
        } else {
            self.lr * ((step + 1) as f64 / self.warmup as f64).min(1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_snr_weights_cap_the_signal_to_noise_ratio() {
        let schedule = NoiseSchedule::linear(1000).unwrap();
        // t = 0: ᾱ = 1 − 1e-4, SNR = 0.9999/0.0001 = 9999, so w = 5/9999; at t = 999 SNR ≈ 4e-5 < 5: w = 1.
        let w = LossWeighting::MinSnr { gamma: 5.0 }.weights(&schedule, &[0, 999]);
        assert!((w[0] - 5.0 / 9999.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w[1], 1.0);
        assert_eq!(LossWeighting::Simple.weights(&schedule, &[0, 999]), vec![1.0, 1.0]);
    }

    #[test]
    fn a_recipe_written_before_clipping_existed_reads_as_unclipped() {
        let mut json = serde_json::to_value(TrainConfig::default()).unwrap();
        let map = json.as_object_mut().unwrap();
        map.remove("grad_clip");
        map.remove("loss_weighting");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.grad_clip, None);
        assert_eq!(old.loss_weighting, LossWeighting::Simple);
        // Turning clipping on is allowed when resuming; anything else in the recipe is not.
        assert!(old.same_recipe(&TrainConfig::default()));
        assert!(!old.same_recipe(&TrainConfig {
            lr: 1e-3,
            ..TrainConfig::default()
        }));
    }
}
