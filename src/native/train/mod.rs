//! Training ε_θ with the simplified objective L_simple = E‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²
//! (Ho et al. eq. 14, Algorithm 1), with Adam, learning-rate warm-up, gradient clipping by the global
//! norm, an EMA of the weights, sample grids, atomic checkpoints and resumption. Min-SNR-γ loss
//! weighting (Hang et al. 2023) is an option beside L_simple.
//!
//! The loop lives here; [`config`] is the recipe, [`checkpoint`] the run folder, [`ema`] the
//! averaged weights, [`grads`] the clipping, [`loss`] the weighted loss, [`divergence`] the rule that stops a bad run and
//! [`conditioning`] the label dropout and the starting weights of a conditional run.

pub mod checkpoint;
pub mod conditioning;
pub mod config;
pub mod divergence;
pub mod ema;
pub mod grads;
pub mod loss;

pub use checkpoint::{RunDir, RunLock, checkpoint_config, checkpoint_step, export_model, write_loss_plot};
pub use conditioning::drop_labels;
pub use config::{LrChange, LrDecay, TrainConfig};
pub use divergence::DivergenceWatch;
pub use ema::ema_update;
pub use grads::clip_grad_global_norm;
pub use loss::{LossWeighting, training_loss};

use crate::data::{BatchSampler, ImageDataset};
use crate::diffusion::forward::q_sample;
use crate::diffusion::sampler::{Guided, ReverseChain, SamplerConfig};
use crate::diffusion::schedule::NoiseSchedule;
use crate::image::GrayImage;
use crate::model::UNet;
use crate::model::weights::{WeightsError, unet_to_bytes};
use crate::native::io::{write_atomic, write_png};
use crate::rng::NoiseRng;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use checkpoint::{CheckpointState, loss_csv_up_to, read_checkpoint_state, save_checkpoint};
use conditioning::{LABEL_DROPOUT_STREAM, initial_weights};
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
/// class-conditional model draws two rows, a column per class, guided with w = 2 instead.
pub fn sample_grid(unet: &UNet, schedule: &NoiseSchedule, n: usize, seed: u64, device: &Device) -> GrayImage {
    let sampler = SamplerConfig::default_for(schedule.timesteps())
        .build(schedule)
        .expect("valid default sampler");
    let size = 28;
    let (x0, columns) = match unet.num_classes() {
        None => {
            let x0 = ReverseChain::from_noise(unet, sampler, [n, 1, size, size], seed, device).run();
            (x0, (n as f64).sqrt().ceil() as usize)
        }
        Some(classes) => {
            let labels = (0..2 * classes).map(|i| Some(i % classes)).collect::<Vec<_>>();
            let n = labels.len();
            let guided = Guided::new(unet, labels, 2.0).expect("classes in range");
            let x0 = ReverseChain::from_noise(&guided, sampler, [n, 1, size, size], seed, device).run();
            (x0, classes)
        }
    };
    let data = x0.into_data();
    let pixels = data.as_slice::<f32>().expect("f32 samples");
    GrayImage::grid(pixels, size, columns, 2)
}

/// Trains on `data` into the run folder `out`. With `resume`, continues from the folder's latest
/// checkpoint (its recipe must match `config` except for the total number of steps). After each
/// step `on_progress` is told where the run is; `ControlFlow::Break` (the CLI's answer to Ctrl-C
/// or SIGTERM) writes a checkpoint and the export at that step and ends the run there.
pub fn train(
    config: &TrainConfig,
    data: &ImageDataset,
    out: &Path,
    device: &Device,
    resume: bool,
    mut on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> Result<TrainSummary, TrainError> {
    config.validate()?;
    if data.rows != config.unet.image_size || data.cols != config.unet.image_size {
        return Err(TrainError::Settings(format!(
            "the dataset's images are {}×{} but the model expects {}×{}",
            data.rows, data.cols, config.unet.image_size, config.unet.image_size
        )));
    }
    let schedule =
        NoiseSchedule::new(config.schedule, config.timesteps).map_err(|e| TrainError::Settings(e.to_string()))?;
    let run = RunDir::new(out);
    let _lock = RunLock::acquire(out)?;
    std::fs::create_dir_all(run.samples()).map_err(io_err(format!("creating {}", out.display())))?;
    let train_device = device.clone().autodiff();
    let plain_device = device.clone();
    let diffusion = config.diffusion_config();

    // Seeded initialisation, and (below) a seed per step for dropout: a run is reproducible, and a
    // resumed run takes the same steps as an uninterrupted one.
    train_device.seed(config.seed);
    let mut model = config.unet.init(&train_device);
    let mut optim = AdamConfig::new().init();
    let mut ema = model.valid();
    let mut start_step = 0;
    if resume {
        let Some(dir) = run.resumable() else {
            return Err(TrainError::Resume {
                path: run.checkpoint().display().to_string(),
                reason: "no checkpoint there (start a new run instead)".into(),
            });
        };
        let shown = dir.display().to_string();
        let resume_err = |reason: String| TrainError::Resume {
            path: shown.clone(),
            reason,
        };
        let state = read_checkpoint_state(&dir)?;
        if !config.continues(&state.config, state.step) {
            return Err(resume_err(format!(
                "its recipe (model, schedule, batch, lr, warm-up, EMA, seed) differs from these settings; \
                 only the number of steps, the intervals, the gradient clipping, a learning-rate decay \
                 that begins at or after the checkpoint's step {} and a new rate asked for with \
                 --change-lr may change when resuming",
                state.step
            )));
        }
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| resume_err(format!("{name}: {e}")));
        model = diffusion.load_unet(read("model.bpk")?, &train_device)?;
        ema = diffusion.load_unet(read("ema.bpk")?, &plain_device)?;
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(read("optim.bpk")?))
            .map_err(|e| resume_err(format!("optim.bpk: {e}")))?;
        start_step = state.step;
    } else if run.resumable().is_some() {
        return Err(TrainError::RunExists(out.to_path_buf()));
    } else if let Some(init) = &config.init_from {
        (model, ema) = initial_weights(Path::new(init), config, &train_device)?;
    }
    if let Some(n) = config.unet.num_classes {
        if data.labels.len() != data.len() {
            return Err(TrainError::Settings(
                "conditional training needs the dataset's labels (the labels-idx1 file beside the images)".into(),
            ));
        }
        if let Some(&bad) = data.labels.iter().find(|&&l| l as usize >= n) {
            return Err(TrainError::Settings(format!(
                "the dataset has label {bad} but the model has {n} classes"
            )));
        }
    }
    write_atomic(
        &out.join("train.json"),
        serde_json::to_string_pretty(config).expect("serialises").as_bytes(),
    )
    .map_err(io_err("writing train.json"))?;
    if !resume || !run.loss_csv().exists() {
        write_atomic(&run.loss_csv(), b"step,loss,lr\n").map_err(io_err("writing loss.csv"))?;
    } else {
        // A run that died after its last checkpoint logged steps that will now be trained again.
        let csv = std::fs::read_to_string(run.loss_csv()).map_err(io_err("reading loss.csv"))?;
        let kept = loss_csv_up_to(&csv, start_step);
        if kept.len() != csv.len() {
            write_atomic(&run.loss_csv(), kept.as_bytes()).map_err(io_err("rewriting loss.csv"))?;
        }
    }
    let mut loss_log = std::fs::OpenOptions::new()
        .append(true)
        .open(run.loss_csv())
        .map_err(io_err("opening loss.csv"))?;

    let mut batches = BatchSampler::new(data.len(), config.seed);
    let started = Instant::now();
    let mut last_loss = f64::NAN;
    let mut watch = DivergenceWatch::default();
    let mut end_step = config.steps;
    let size = config.unet.image_size;
    for step in start_step..config.steps {
        // Algorithm 1: x_0 ~ q(x_0), t ~ Uniform, ε ~ N(0, I); step on ∇‖ε − ε_θ(x_t, t)‖².
        let indices = batches.batch_at(step, config.batch);
        let step_seed = NoiseRng::stream_seed(config.seed, step as u64);
        train_device.seed(step_seed);
        let mut rng = NoiseRng::new(step_seed);
        let t: Vec<usize> = (0..config.batch).map(|_| rng.below(config.timesteps)).collect();
        let x0 = data.batch(&indices, &train_device); // [b, 1, s, s]
        let noise = rng.normal_tensor([config.batch, 1, size, size], &train_device); // [b, 1, s, s]
        let x_t = q_sample(&schedule, x0, &t, noise.clone()); // [b, 1, s, s]
        let classes = config.p_uncond.map(|p| {
            // Its own stream, so the draws of t and ε are those of an unconditional run.
            let mut rng = NoiseRng::new(NoiseRng::stream_seed(step_seed, LABEL_DROPOUT_STREAM));
            drop_labels(indices.iter().map(|&i| data.labels[i]), p, &mut rng)
        });
        let eps = model.forward_classes(x_t, &t, classes.as_deref()); // [b, 1, s, s]
        let loss = training_loss(eps, noise, &t, config.loss_weighting, &schedule); // [1]
        let lr = config.lr_at(step);
        // Every step's loss and gradient norm are read back and checked before the weights move,
        // so a bad step never reaches the weights, a checkpoint or an export.
        let step_loss = loss.clone().into_scalar::<f32>() as f64;
        watch.check_loss(step + 1, step_loss)?;
        let log_now = (step + 1) % config.log_every == 0 || step + 1 == config.steps;
        if log_now {
            last_loss = step_loss;
            use std::io::Write;
            writeln!(loss_log, "{},{last_loss:.6},{lr:.3e}", step + 1).map_err(io_err("appending to loss.csv"))?;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // Without clipping the norm is still taken (a scale of exactly 1 changes no gradient).
        let (grads, norm) = clip_grad_global_norm(grads, &model, config.grad_clip.unwrap_or(f64::INFINITY));
        if let Some(norm) = norm {
            watch.check_grad_norm(step + 1, norm.into_scalar::<f32>() as f64)?;
        }
        model = optim.step(lr, model, grads);
        ema = ema_update(ema, &model, config.ema_decay, step);

        let done = step + 1;
        let images_per_second = (done - start_step) as f64 * config.batch as f64 / started.elapsed().as_secs_f64();
        let stop = on_progress(&Progress {
            step: done,
            steps: config.steps,
            loss: last_loss,
            images_per_second,
        })
        .is_break();
        if config.sample_every > 0 && done % config.sample_every == 0 {
            let grid = sample_grid(&ema, &schedule, 16, config.seed, &plain_device);
            write_png(&run.samples().join(format!("step_{done:07}.png")), &grid)
                .map_err(io_err("writing a sample grid"))?;
        }
        // A checkpoint waits while the loss is above the divergence threshold: only weights whose
        // loss is back to normal are kept.
        if (stop || done % config.checkpoint_every == 0 || done == config.steps) && watch.healthy() {
            let state = CheckpointState {
                step: done,
                config: config.clone(),
            };
            save_checkpoint(&run, &model, &ema, &optim, &state)?;
            export_model(&run.export(), &diffusion, &unet_to_bytes(ema.clone())?)?;
            write_loss_plot(&run)?;
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
        export_dir: run.export(),
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
