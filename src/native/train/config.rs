//! The training recipe: what `train.json` and a checkpoint's `state.json` record.

use crate::diffusion::schedule::{DEFAULT_TIMESTEPS, ScheduleKind};
use crate::model::UNetConfig;
use crate::model::weights::DiffusionConfig;
use serde::{Deserialize, Serialize};

use super::TrainError;
use super::loss::LossWeighting;

/// The most optimisation steps a run may ask for (Ho et al.'s longest run was 800,000).
pub const MAX_STEPS: usize = 100_000_000;
/// The largest batch a step may take (a bound on memory: a 28 × 28 batch of 4,096 takes about
/// 6 GB of activations with the default net).
pub const MAX_BATCH: usize = 4096;

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
    /// A linear fall of the learning rate to zero after the constant phase; `None`: constant to
    /// the end, as Ho et al. (runs recorded before the option existed read as `None`).
    #[serde(default)]
    pub lr_decay: Option<LrDecay>,
    /// Class-conditional training (the U-Net's `num_classes` is set): the probability of replacing
    /// an image's label by "no class" (Ho & Salimans 2022 use 0.1 or 0.2); `None` for
    /// unconditional runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_uncond: Option<f64>,
    /// The class names, in label order, that the exported `config.json` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
    /// The exported model (a folder with `config.json` and `model.bpk`) the run's weights began
    /// from instead of a random initialisation; a conditional run may start from an unconditional
    /// model, its class embedding then starting at zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// Conditional runs from trained weights: every weight but the class embedding learns at this
    /// fraction of the learning rate, so the network the class vectors steer moves slowly while
    /// the vectors are learned; 0 freezes it (no gradient at all: the model given no class stays
    /// exactly the `init_from` model). `None`: one rate for all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_lr_scale: Option<f64>,
    /// Changes of the peak learning rate asked for on resume (`--resume --lr X --change-lr`), in
    /// order: from each one's step on, its rate replaces `lr` (warm-up and decay still apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lr_changes: Vec<LrChange>,
}

/// A change of the peak learning rate from a step on, recorded so the run stays reproducible.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrChange {
    /// The first (0-based) step at the new rate.
    pub from_step: usize,
    /// The new peak rate.
    pub lr: f64,
}

/// The learning rate falls linearly from its peak at step `start` to zero at step `end`
/// ("decay to zero"): the noise of the late Adam steps shrinks with it, so the weights settle
/// instead of wandering around the minimum at the peak rate's scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrDecay {
    /// The last step at the peak rate (0-based step index where the fall begins).
    pub start: usize,
    /// The step at which the rate reaches zero; a run with this decay ends at or before it.
    pub end: usize,
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
            lr_decay: None,
            p_uncond: None,
            class_names: None,
            init_from: None,
            network_lr_scale: None,
            lr_changes: Vec::new(),
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
        for (what, value, max) in [
            ("the number of steps", self.steps, MAX_STEPS),
            ("the batch size", self.batch, MAX_BATCH),
            ("the warm-up", self.warmup, MAX_STEPS),
        ] {
            if value > max {
                return bad(&format!("{what} is {value}, above its bound of {max}"));
            }
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
        if let Some(decay) = self.lr_decay {
            if decay.start >= decay.end {
                return bad("the learning-rate decay must start before it ends");
            }
            if self.steps > decay.end {
                return bad(&format!(
                    "the learning rate reaches zero at step {} but the run is {} steps long",
                    decay.end, self.steps
                ));
            }
        }
        match (self.unet.num_classes, self.p_uncond) {
            (Some(_), Some(p)) if !(0.0..1.0).contains(&p) => {
                return bad(&format!("--p-uncond must be in [0, 1) (got {p})"));
            }
            (Some(_), None) => return bad("a conditional run needs p_uncond (the label-dropout rate)"),
            (None, Some(_)) => return bad("p_uncond is only for conditional runs (--conditional)"),
            _ => {}
        }
        if let Some(scale) = self.network_lr_scale {
            if !(0.0..=1.0).contains(&scale) {
                return bad(&format!(
                    "the network's learning-rate scale must be in [0, 1] (got {scale})"
                ));
            }
            if self.unet.num_classes.is_none() || self.init_from.is_none() {
                return bad("a network learning-rate scale needs a conditional run from trained weights (--init-from)");
            }
        }
        if let (Some(n), Some(names)) = (self.unet.num_classes, &self.class_names)
            && names.len() != n
        {
            return bad(&format!("{} class names for {n} classes", names.len()));
        }
        self.unet.validate().map_err(|e| TrainError::Settings(e.to_string()))
    }

    /// Whether `other` trains the same way: everything but the length of the run, how often it
    /// samples, checkpoints and logs, and the gradient clipping (which a resumed run may turn on,
    /// as the continuation of the shipped weights did).
    pub fn same_recipe(&self, other: &TrainConfig) -> bool {
        let normalise = |c: &TrainConfig| TrainConfig {
            // A recipe recorded before the skip layout was a choice (`None`) is per level.
            unet: UNetConfig {
                skips: Some(c.unet.skip_layout()),
                ..c.unet.clone()
            },
            steps: 0,
            sample_every: 0,
            checkpoint_every: 1,
            log_every: 1,
            grad_clip: None,
            ..c.clone()
        };
        normalise(self) == normalise(other)
    }

    /// Whether this recipe may continue a run recorded with `recorded` at checkpoint `step`: the
    /// same recipe, except that a learning-rate decay may be added or moved while neither the
    /// recorded one nor the new one has begun by `step`. Either way every step taken so far had
    /// the learning rate this recipe gives it, so the recipe still reproduces the whole run.
    pub fn continues(&self, recorded: &TrainConfig, step: usize) -> bool {
        let not_begun = |decay: Option<LrDecay>| decay.is_none_or(|d| d.start >= step);
        let without_decay = |c: &TrainConfig| TrainConfig {
            lr_decay: None,
            lr_changes: Vec::new(),
            ..c.clone()
        };
        // Recorded changes stay; new ones may only begin at or after the checkpoint's step.
        let changes_continue = self.lr_changes.starts_with(&recorded.lr_changes)
            && self.lr_changes[recorded.lr_changes.len()..]
                .iter()
                .all(|c| c.from_step >= step);
        without_decay(self).same_recipe(&without_decay(recorded))
            && changes_continue
            && (self.lr_decay == recorded.lr_decay || not_begun(self.lr_decay) && not_begun(recorded.lr_decay))
    }

    /// The `config.json` of the exported model.
    pub fn diffusion_config(&self) -> DiffusionConfig {
        DiffusionConfig {
            unet: self.unet.clone(),
            schedule: self.schedule,
            timesteps: self.timesteps,
            class_names: self.class_names.clone(),
        }
    }

    /// Learning rate at (0-based) `step`: linear warm-up, then constant (as Ho et al.), then with
    /// [`LrDecay`] a linear fall: lr · (end − step) / (end − start) from `start` on.
    pub fn lr_at(&self, step: usize) -> f64 {
        let peak = self
            .lr_changes
            .iter()
            .rev()
            .find(|c| step >= c.from_step)
            .map_or(self.lr, |c| c.lr);
        let warmup = if self.warmup == 0 {
            1.0
        } else {
            ((step + 1) as f64 / self.warmup as f64).min(1.0)
        };
        let decay = match self.lr_decay {
            Some(LrDecay { start, end }) if step >= start => end.saturating_sub(step) as f64 / (end - start) as f64,
            _ => 1.0,
        };
        peak * warmup * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipe_written_before_clipping_existed_reads_as_unclipped() {
        let mut json = serde_json::to_value(TrainConfig::default()).unwrap();
        let map = json.as_object_mut().unwrap();
        map.remove("grad_clip");
        map.remove("loss_weighting");
        map.remove("lr_decay");
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

    #[test]
    fn a_recipe_written_before_the_skip_layout_was_a_choice_is_per_level() {
        use crate::model::SkipLayout;
        let mut json = serde_json::to_value(TrainConfig::default()).unwrap();
        json["unet"].as_object_mut().unwrap().remove("skips");
        let old: TrainConfig = serde_json::from_value(json).unwrap();
        let with = |skips| TrainConfig {
            unet: UNetConfig {
                skips,
                ..UNetConfig::new()
            },
            ..TrainConfig::default()
        };
        // `--skips per-level` continues it; `--skips per-block` is another network.
        assert!(old.same_recipe(&with(Some(SkipLayout::PerLevel))));
        assert!(!old.same_recipe(&with(Some(SkipLayout::PerBlock))));
    }

    #[test]
    fn the_learning_rate_warms_up_holds_and_falls_linearly_to_zero() {
        let config = TrainConfig {
            lr: 1e-3,
            warmup: 4,
            steps: 20,
            lr_decay: Some(LrDecay { start: 10, end: 20 }),
            ..TrainConfig::default()
        };
        config.validate().unwrap();
        // Warm-up: (step + 1)/4 of the peak; peak until step 10; then 1e-3 · (20 − step)/10.
        let expected = [
            (0, 0.25e-3),
            (3, 1e-3),
            (9, 1e-3),
            (10, 1e-3),
            (11, 0.9e-3),
            (15, 0.5e-3),
            (19, 0.1e-3),
        ];
        for (step, lr) in expected {
            assert!(
                (config.lr_at(step) - lr).abs() < 1e-15,
                "step {step}: {} ≠ {lr}",
                config.lr_at(step)
            );
        }
        let too_long = TrainConfig {
            steps: 21,
            ..config.clone()
        };
        assert!(too_long.validate().is_err(), "the run may not outlast its decay");
        let backwards = TrainConfig {
            lr_decay: Some(LrDecay { start: 20, end: 20 }),
            ..config
        };
        assert!(backwards.validate().is_err());
    }

    #[test]
    fn a_decay_may_be_added_to_a_resumed_run_only_where_it_has_not_begun() {
        let constant = TrainConfig {
            steps: 100,
            ..TrainConfig::default()
        };
        let decayed = |start| TrainConfig {
            lr_decay: Some(LrDecay { start, end: 100 }),
            ..constant.clone()
        };
        // At checkpoint 50: a decay from step 50 or later leaves steps 0..50 as they were.
        assert!(decayed(50).continues(&constant, 50));
        assert!(decayed(70).continues(&decayed(60), 50));
        assert!(
            constant.continues(&decayed(60), 50),
            "a decay that has not begun may be dropped"
        );
        // One that would have changed steps already taken may not.
        assert!(!decayed(40).continues(&constant, 50));
        assert!(!constant.continues(&decayed(40), 50));
        assert!(!decayed(60).continues(&decayed(40), 50));
        assert!(
            decayed(40).continues(&decayed(40), 50),
            "the recorded decay itself continues"
        );
        // The rest of the recipe still may not change.
        let other_lr = TrainConfig {
            lr: 1e-3,
            ..decayed(50)
        };
        assert!(!other_lr.continues(&constant, 50));
    }
}
