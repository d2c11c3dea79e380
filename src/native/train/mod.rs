//! Training ε_θ with the simplified objective L_simple = E‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²
//! (Ho et al. eq. 14, Algorithm 1), with Adam, learning-rate warm-up, gradient clipping by the global
//! norm, an EMA of the weights, sample grids, atomic checkpoints and resumption. Min-SNR-γ loss
//! weighting (Hang et al. 2023) is an option beside L_simple.
//!
//! The loop lives here and a run's set-up, step and checkpoint in `run.rs`; [`config`] is the recipe, [`checkpoint`] the run folder, [`ema`] the
//! averaged weights, [`grads`] the clipping, [`loss`] the weighted loss, [`divergence`] the rule that stops a bad run and
//! [`conditioning`] the label dropout and the starting weights of a conditional run.

pub mod checkpoint;
pub mod conditioning;
pub mod config;
pub mod divergence;
pub mod ema;
pub mod grads;
pub mod loss;
mod run;

pub use checkpoint::{RunDir, RunLock, checkpoint_config, checkpoint_step, export_model, write_loss_plot};
pub use conditioning::drop_labels;
pub use config::{LrChange, LrDecay, TrainConfig};
pub use divergence::DivergenceWatch;
pub use ema::ema_update;
pub use grads::clip_grad_global_norm;
pub use loss::{LossWeighting, training_loss};

use crate::data::{DataError, ImageSource};
use crate::diffusion::sampler::{Guided, ReverseChain, SamplerConfig};
use crate::diffusion::schedule::NoiseSchedule;
use crate::image::Picture;
use crate::model::UNet;
use crate::model::weights::WeightsError;
use burn::tensor::Device;
use run::Run;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// File system trouble.
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        error: std::io::Error,
    },
    /// A checkpoint or export could not be written or read.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// A checkpoint does not match this run.
    #[error("cannot resume from '{path}': {reason}")]
    Resume {
        /// The checkpoint.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The training images could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Bad settings.
    #[error("{0}")]
    Settings(String),
    /// The run stopped because its loss or gradients went bad; nothing after the last good
    /// checkpoint was written.
    #[error("training stopped at step {step}: {cause}; the last good checkpoint is kept (try a smaller learning rate)")]
    Diverged {
        /// The (1-based) step at which it was detected.
        step: usize,
        /// What was seen.
        cause: String,
    },
    /// Another training process holds the run folder.
    #[error("'{}' is in use by another training run (process {pid}); wait for it or choose another --out", .out.display())]
    Busy {
        /// The folder.
        out: PathBuf,
        /// The process holding it.
        pid: u32,
    },
    /// A new run was asked for in a folder that already holds one.
    #[error("'{}' already holds a checkpoint: resume it, or start the new run in another folder", .0.display())]
    RunExists(PathBuf),
}

/// What happened in a training run.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// The step training started from (0, or the checkpoint's).
    pub start_step: usize,
    /// The last step done.
    pub end_step: usize,
    /// Loss at the last logged step.
    pub last_loss: f64,
    /// Mean throughput.
    pub images_per_second: f64,
    /// Where the EMA model was exported.
    pub export_dir: PathBuf,
    /// Whether the caller stopped the run early (a checkpoint at `end_step` was written).
    pub interrupted: bool,
}

/// Progress reported to the caller (the CLI draws a bar with it).
pub struct Progress {
    /// Steps done.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// The latest loss.
    pub loss: f64,
    /// Throughput since the start of this run.
    pub images_per_second: f64,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TrainError {
    let context = context.into();
    move |error| TrainError::Io { context, error }
}

/// A grid of `n` samples from `unet` (the default sampler: DDIM, 50 steps, η = 0) as a picture. A
/// class-conditional model draws two rows, a column per class, guided with w = 2 instead. The
/// images are `[channels, size, size]` (`image`).
pub fn sample_grid(
    unet: &UNet,
    schedule: &NoiseSchedule,
    image: [usize; 2],
    n: usize,
    seed: u64,
    device: &Device,
) -> Picture {
    let sampler = SamplerConfig::default_for(schedule.timesteps())
        .build(schedule)
        .expect("valid default sampler");
    let [channels, size] = image;
    let (x0, columns) = match unet.num_classes() {
        None => {
            let x0 = ReverseChain::from_noise(unet, sampler, [n, channels, size, size], seed, device).run();
            (x0, (n as f64).sqrt().ceil() as usize)
        }
        Some(classes) => {
            let labels = (0..2 * classes).map(|i| Some(i % classes)).collect::<Vec<_>>();
            let n = labels.len();
            let guided = Guided::new(unet, labels, 2.0).expect("classes in range");
            let x0 = ReverseChain::from_noise(&guided, sampler, [n, channels, size, size], seed, device).run();
            (x0, classes)
        }
    };
    let data = x0.into_data();
    let pixels = data.as_slice::<f32>().expect("f32 samples");
    Picture::grid_channels(pixels, channels, size, columns, 2)
}

/// Trains on `data` into the run folder `out`, on `devices` (the weights on the first; each step's
/// batch is split across all of them). With `resume`, continues from the folder's latest
/// checkpoint (its recipe must match `config` except for the total number of steps). After each
/// step `on_progress` is told where the run is; `ControlFlow::Break` (the CLI's answer to Ctrl-C
/// or SIGTERM) writes a checkpoint and the export at that step and ends the run there.
pub fn train(
    config: &TrainConfig,
    data: &dyn ImageSource,
    out: &Path,
    devices: &[Device],
    resume: bool,
    mut on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary, TrainError> {
    let mut run = Run::open(config, data, out, devices, resume)?;
    let start_step = run.start_step;
    let started = Instant::now();
    let mut last_loss = f64::NAN;
    let mut end_step = config.steps;
    for step in start_step..config.steps {
        let loss = run.step(step, data)?;
        let done = step + 1;
        if done % config.log_every == 0 || done == config.steps {
            last_loss = loss;
            run.log_loss(done, loss, config.lr_at(step))?;
        }
        let images_per_second = (done - start_step) as f64 * config.batch as f64 / started.elapsed().as_secs_f64();
        let stop = on_progress(&Progress {
            step: done,
            steps: config.steps,
            loss: last_loss,
            images_per_second,
        })
        .is_break();
        if config.sample_every > 0 && done % config.sample_every == 0 {
            run.write_sample_grid(done)?;
        }
        if stop || done % config.checkpoint_every == 0 || done == config.steps {
            run.checkpoint(done)?;
        }
        if stop {
            end_step = done;
            break;
        }
    }
    let images_per_second =
        (end_step - start_step) as f64 * config.batch as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainSummary {
        start_step,
        end_step,
        last_loss,
        images_per_second,
        export_dir: run.export_dir(),
        interrupted: end_step < config.steps,
    })
}

/// Small modules with known parameters, for the unit tests of this folder.
#[cfg(test)]
mod test_layers {
    use burn::module::Param;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, Tensor};

    /// A 2 → 1 linear layer with every weight `w` and bias `b`.
    pub fn linear(w: f32, b: f32, device: &Device) -> Linear {
        let mut layer = LinearConfig::new(2, 1).init(device);
        layer.weight = Param::from_tensor(Tensor::full([2, 1], w, device));
        layer.bias = Some(Param::from_tensor(Tensor::full([1], b, device)));
        layer
    }

    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().as_slice::<f32>().unwrap().to_vec()
    }
}
