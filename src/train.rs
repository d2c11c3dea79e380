//! Training ε_θ with the simplified objective L_simple = E‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²
//! (Ho et al. eq. 14, Algorithm 1), with Adam, learning-rate warm-up, gradient clipping by the global
//! norm, an EMA of the weights, sample grids, atomic checkpoints and resumption. Min-SNR-γ loss
//! weighting (Hang et al. 2023) is an option beside L_simple.

use crate::data::{BatchSampler, ImageDataset};
use crate::forward::q_sample;
use crate::image::GrayImage;
use crate::io::{write_atomic, write_png};
use crate::model::{UNet, UNetConfig};
use crate::rng::NoiseRng;
use crate::sampler::chain::normal_tensor;
use crate::sampler::{ReverseChain, SamplerConfig};
use crate::schedule::{NoiseSchedule, ScheduleKind};
use crate::weights::{CONFIG_FILE, DiffusionConfig, WEIGHTS_FILE, WeightsError, unet_to_bytes};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::TensorData;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
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
}

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
            timesteps: 1000,
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
            return bad("--steps must be at least 1");
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1");
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad("--lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("--ema must be in [0, 1)");
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("--checkpoint-every and --log-every must be at least 1");
        }
        if self.grad_clip.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("--grad-clip must be a positive number (or 0 for no clipping)");
        }
        if let LossWeighting::MinSnr { gamma } = self.loss_weighting
            && !(gamma > 0.0 && gamma.is_finite())
        {
            return bad("--min-snr-gamma must be a positive number");
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
}

/// The checkpoint's own bookkeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CheckpointState {
    step: usize,
    config: TrainConfig,
}

/// The recipe recorded in the latest checkpoint of the run folder `out` (what `train --resume`
/// continues), or `None` when the folder has no checkpoint.
pub fn checkpoint_config(out: &Path) -> Result<Option<TrainConfig>, TrainError> {
    let Some(dir) = RunDir::new(out).resumable() else {
        return Ok(None);
    };
    read_checkpoint_state(&dir).map(|state| Some(state.config))
}

fn read_checkpoint_state(dir: &Path) -> Result<CheckpointState, TrainError> {
    let err = |reason: String| TrainError::Resume {
        path: dir.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("state.json: {e}")))
}

/// Rescales all gradients by min(1, `max_norm` / ‖g‖), ‖g‖ the L2 norm of every parameter's gradient
/// taken together (TensorFlow's `clip_by_global_norm`, which Ho et al. use; burn's own
/// `GradientClipping::Norm` clips each parameter on its own). Returns the gradients and ‖g‖ before
/// clipping, as a one-element tensor (read it back only when needed: it waits for the device), or
/// `None` when the module has no gradient at all.
pub fn clip_grad_global_norm<M: Module>(
    grads: GradientsParams,
    module: &M,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<1>>) {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum(); // [1]
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    struct Scale {
        grads: GradientsParams,
        factor: Tensor<1>,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]); // [1, …, 1]
                self.grads.register(param.id, g * factor);
            }
        }
    }
    let mut sum = SumSquares {
        grads: &grads,
        total: None,
    };
    module.visit(&mut sum);
    let Some(total) = sum.total else {
        return (grads, None);
    };
    let norm = total.sqrt(); // [1]
    // min(1, c / (‖g‖ + ε)): the ε keeps an all-zero gradient finite.
    let factor = norm
        .clone()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0); // [1]
    let mut scale = Scale { grads, factor };
    module.visit(&mut scale);
    (scale.grads, Some(norm))
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

/// Collects a module's float parameters, flattened, by id (without autodiff).
struct ParamCollector(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for ParamCollector {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val().without_autodiff();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// ema ← decay · ema + (1 − decay) · current, parameter by parameter.
struct EmaUpdate {
    current: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            ema.mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

/// Updates the EMA copy towards `model`, with the usual warm-up of the decay:
/// min(decay, (1 + step)/(10 + step)).
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64, step: usize) -> M {
    let mut collector = ParamCollector(HashMap::new());
    model.visit(&mut collector);
    let decay = decay.min((1.0 + step as f64) / (10.0 + step as f64));
    ema.map(&mut EmaUpdate {
        current: collector.0,
        decay,
    })
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TrainError {
    let context = context.into();
    move |error| TrainError::Io { context, error }
}

/// Paths inside a run's output folder.
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run folder.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }
    /// The latest complete checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    fn checkpoint_tmp(&self) -> PathBuf {
        self.root.join("checkpoint.tmp")
    }
    fn checkpoint_old(&self) -> PathBuf {
        self.root.join("checkpoint.old")
    }
    /// The exported EMA model (what the web app ships).
    pub fn export(&self) -> PathBuf {
        self.root.join("export")
    }
    /// Sample grids.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    /// The loss curve.
    pub fn loss_csv(&self) -> PathBuf {
        self.root.join("loss.csv")
    }
    /// The loss curve as a picture.
    pub fn loss_svg(&self) -> PathBuf {
        self.root.join("loss.svg")
    }
    /// The checkpoint to resume from: the complete one, or the previous one if a crash hit
    /// between the two renames of [`save_checkpoint`].
    fn resumable(&self) -> Option<PathBuf> {
        [self.checkpoint(), self.checkpoint_old()]
            .into_iter()
            .find(|p| p.join("state.json").is_file())
    }
}

/// Writes a checkpoint (model, EMA, optimiser, step) so that it is either wholly there or not:
/// everything goes to `checkpoint.tmp/`, which then replaces `checkpoint/` by renames.
fn save_checkpoint(
    run: &RunDir,
    model: &UNet,
    ema: &UNet,
    optim: &ModuleOptimizer,
    state: &CheckpointState,
) -> Result<(), TrainError> {
    let tmp = run.checkpoint_tmp();
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err("clearing checkpoint.tmp"))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io_err("creating checkpoint.tmp"))?;
    std::fs::write(tmp.join("model.bpk"), unet_to_bytes(model.clone())?).map_err(io_err("writing model.bpk"))?;
    std::fs::write(tmp.join("ema.bpk"), unet_to_bytes(ema.clone())?).map_err(io_err("writing ema.bpk"))?;
    let optim_bytes = optim
        .into_bytes()
        .map_err(|e| TrainError::Settings(format!("saving the optimiser: {e}")))?;
    std::fs::write(tmp.join("optim.bpk"), &optim_bytes[..]).map_err(io_err("writing optim.bpk"))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(io_err("writing state.json"))?;
    let (cur, old) = (run.checkpoint(), run.checkpoint_old());
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err("removing checkpoint.old"))?;
    }
    if cur.exists() {
        std::fs::rename(&cur, &old).map_err(io_err("rotating checkpoint"))?;
    }
    std::fs::rename(&tmp, &cur).map_err(io_err("publishing checkpoint"))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err("removing checkpoint.old"))?;
    }
    Ok(())
}

/// Exports the EMA weights and `config.json` to `dir`, each file written atomically.
pub fn export_model(dir: &Path, config: &DiffusionConfig, unet: &UNet) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &unet_to_bytes(unet.clone())?)
        .map_err(io_err("writing the exported weights"))?;
    write_atomic(&dir.join(CONFIG_FILE), config.to_json().as_bytes()).map_err(io_err("writing config.json"))?;
    Ok(())
}

/// `loss.csv` contents without the lines logged after `step` (the header is kept).
fn loss_csv_up_to(csv: &str, step: usize) -> String {
    csv.lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|s| s.trim().parse::<usize>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, line)| format!("{line}\n"))
        .collect()
}

/// Draws `loss.csv` as `loss.svg` beside it.
pub fn write_loss_plot(run: &RunDir) -> Result<(), TrainError> {
    let csv = std::fs::read_to_string(run.loss_csv()).map_err(io_err("reading loss.csv"))?;
    let (svg, _) = crate::plot::loss_chart(&csv, 20);
    write_atomic(&run.loss_svg(), svg.as_bytes()).map_err(io_err("writing loss.svg"))
}

/// A grid of `n` samples from `unet` (DDIM, 50 steps, η = 0) as a picture.
pub fn sample_grid(unet: &UNet, schedule: &NoiseSchedule, n: usize, seed: u64, device: &Device) -> GrayImage {
    let sampler = SamplerConfig::Ddim {
        steps: 50.min(schedule.timesteps()),
        eta: 0.0,
        clip_x0: true,
    }
    .build(schedule)
    .expect("valid DDIM settings");
    let size = 28;
    let x0 = ReverseChain::from_noise(unet, sampler, [n, 1, size, size], seed, device).run();
    let data = x0.into_data();
    let pixels = data.as_slice::<f32>().expect("f32 samples");
    GrayImage::grid(pixels, size, (n as f64).sqrt().ceil() as usize, 2)
}

/// Trains on `data` into the run folder `out`. With `resume`, continues from the folder's latest
/// checkpoint (its recipe must match `config` except for the total number of steps).
pub fn train(
    config: &TrainConfig,
    data: &ImageDataset,
    out: &Path,
    device: &Device,
    resume: bool,
    mut on_progress: impl FnMut(&Progress),
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
                reason: "no checkpoint there (train without --resume to start a new run)".into(),
            });
        };
        let shown = dir.display().to_string();
        let resume_err = |reason: String| TrainError::Resume {
            path: shown.clone(),
            reason,
        };
        let state = read_checkpoint_state(&dir)?;
        if !state.config.same_recipe(config) {
            return Err(resume_err(
                "its recipe (model, schedule, batch, lr, warm-up, EMA, seed) differs from these settings; \
                 only --steps and the sample/checkpoint/log intervals may change on resume"
                    .into(),
            ));
        }
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| resume_err(format!("{name}: {e}")));
        model = diffusion.load_unet(read("model.bpk")?, &train_device)?;
        ema = diffusion.load_unet(read("ema.bpk")?, &plain_device)?;
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(read("optim.bpk")?))
            .map_err(|e| resume_err(format!("optim.bpk: {e}")))?;
        start_step = state.step;
    } else if run.resumable().is_some() {
        return Err(TrainError::Settings(format!(
            "'{}' already holds a checkpoint: pass --resume to continue it, or choose another --out",
            out.display()
        )));
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
    let size = config.unet.image_size;
    for step in start_step..config.steps {
        // Algorithm 1: x_0 ~ q(x_0), t ~ Uniform, ε ~ N(0, I); step on ∇‖ε − ε_θ(x_t, t)‖².
        let indices = batches.batch_at(step, config.batch);
        let step_seed = NoiseRng::stream_seed(config.seed, step as u64);
        train_device.seed(step_seed);
        let mut rng = NoiseRng::new(step_seed);
        let t: Vec<usize> = (0..config.batch).map(|_| rng.below(config.timesteps)).collect();
        let x0 = data.batch(&indices, &train_device); // [b, 1, s, s]
        let noise = normal_tensor(&mut rng, [config.batch, 1, size, size], &train_device); // [b, 1, s, s]
        let x_t = q_sample(&schedule, x0, &t, noise.clone()); // [b, 1, s, s]
        let eps = model.forward(x_t, &t); // [b, 1, s, s]
        let loss = match config.loss_weighting {
            LossWeighting::Simple => (eps - noise).square().mean(), // [1]
            weighting => {
                let w = weighting
                    .weights(&schedule, &t)
                    .iter()
                    .map(|&w| w as f32)
                    .collect::<Vec<_>>();
                let w = Tensor::<1>::from_data(TensorData::new(w, [config.batch]), &train_device); // [b]
                let per_image = (eps - noise).square().mean_dims(&[1, 2, 3]).reshape([config.batch]); // [b]
                (per_image * w).mean() // [1]
            }
        };
        let lr = config.lr_at(step);
        let log_now = (step + 1) % config.log_every == 0 || step + 1 == config.steps;
        if log_now {
            last_loss = loss.clone().into_scalar::<f32>() as f64;
            use std::io::Write;
            writeln!(loss_log, "{},{last_loss:.6},{lr:.3e}", step + 1).map_err(io_err("appending to loss.csv"))?;
            if !last_loss.is_finite() {
                return Err(TrainError::Settings(format!(
                    "the loss diverged to {last_loss} at step {} (try a smaller --lr)",
                    step + 1
                )));
            }
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        if let Some(max_norm) = config.grad_clip {
            grads = clip_grad_global_norm(grads, &model, max_norm).0;
        }
        model = optim.step(lr, model, grads);
        ema = ema_update(ema, &model, config.ema_decay, step);

        let done = step + 1;
        let images_per_second = (done - start_step) as f64 * config.batch as f64 / started.elapsed().as_secs_f64();
        on_progress(&Progress {
            step: done,
            steps: config.steps,
            loss: last_loss,
            images_per_second,
        });
        if config.sample_every > 0 && done % config.sample_every == 0 {
            let grid = sample_grid(&ema, &schedule, 16, config.seed, &plain_device);
            write_png(&run.samples().join(format!("step_{done:07}.png")), &grid)
                .map_err(io_err("writing a sample grid"))?;
        }
        if done % config.checkpoint_every == 0 || done == config.steps {
            let state = CheckpointState {
                step: done,
                config: config.clone(),
            };
            save_checkpoint(&run, &model, &ema, &optim, &state)?;
            export_model(&run.export(), &diffusion, &ema)?;
            write_loss_plot(&run)?;
        }
    }
    let images_per_second =
        (config.steps - start_step) as f64 * config.batch as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainSummary {
        start_step,
        end_step: config.steps,
        last_loss,
        images_per_second,
        export_dir: run.export(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    /// A 2 → 1 linear layer with every weight `w` and bias `b`.
    fn linear(w: f32, b: f32, device: &Device) -> Linear {
        let mut layer = LinearConfig::new(2, 1).init(device);
        layer.weight = Param::from_tensor(Tensor::full([2, 1], w, device));
        layer.bias = Some(Param::from_tensor(Tensor::full([1], b, device)));
        layer
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn gradients_are_clipped_by_their_global_norm() {
        let device = Device::flex();
        let layer = linear(0.0, 0.0, &device);
        let grads_of = |wg: [f32; 2], bg: f32| {
            let mut g = GradientsParams::new();
            g.register(layer.weight.id, Tensor::<2>::from_data([[wg[0]], [wg[1]]], &device));
            g.register(layer.bias.as_ref().unwrap().id, Tensor::<1>::from_data([bg], &device));
            g
        };
        // ‖(3, 0, 4)‖ = 5: with c = 1 every gradient is scaled by 1/5 (clipping each parameter on
        // its own would give (1, 0) and 1 instead).
        let (mut g, norm) = clip_grad_global_norm(grads_of([3.0, 0.0], 4.0), &layer, 1.0);
        assert!((values(norm.unwrap())[0] - 5.0).abs() < 1e-6);
        let w = values(g.remove::<2>(layer.weight.id).unwrap());
        let b = values(g.remove::<1>(layer.bias.as_ref().unwrap().id).unwrap());
        assert!(
            (w[0] - 0.6).abs() < 1e-6 && w[1].abs() < 1e-7 && (b[0] - 0.8).abs() < 1e-6,
            "{w:?} {b:?}"
        );
        // Under the threshold nothing changes.
        let (mut g, _) = clip_grad_global_norm(grads_of([3.0, 0.0], 4.0), &layer, 10.0);
        assert_eq!(values(g.remove::<2>(layer.weight.id).unwrap()), vec![3.0, 0.0]);
    }

    /// `model` with every parameter set to `v`, keeping the parameter ids (which the EMA matches on).
    fn filled(model: &Linear, v: f32) -> Linear {
        let mut copy = model.clone();
        copy.weight = copy.weight.map(|w| w.ones_like().mul_scalar(v));
        copy.bias = copy.bias.map(|b| b.map(|b| b.ones_like().mul_scalar(v)));
        copy
    }

    #[test]
    fn ema_follows_the_warm_up_formula() {
        let device = Device::flex();
        let model = linear(3.0, -1.0, &device);
        // Step 0: decay = min(0.999, 1/10) = 0.1, so 0.1·1 + 0.9·3 = 2.8 and 0.1·1 + 0.9·(−1) = −0.8.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 0);
        assert!(values(ema.weight.val()).iter().all(|v| (v - 2.8).abs() < 1e-6));
        assert!((values(ema.bias.unwrap().val())[0] + 0.8).abs() < 1e-6);
        // Step 1000: decay = min(0.999, 1001/1010), so (1001·1 + 9·3)/1010 = 1028/1010.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 1000);
        assert!(
            values(ema.weight.val())
                .iter()
                .all(|v| (v - 1028.0 / 1010.0).abs() < 1e-6)
        );
        // Late in training the configured decay wins: 0.999·1 + 0.001·3 = 1.002.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 1_000_000);
        assert!(values(ema.weight.val()).iter().all(|v| (v - 1.002).abs() < 1e-6));
    }

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

    #[test]
    fn resuming_drops_losses_logged_after_the_checkpoint() {
        let csv = "step,loss,lr\n25,0.5,1e-4\n50,0.4,1e-4\n75,0.3,1e-4\n";
        assert_eq!(loss_csv_up_to(csv, 50), "step,loss,lr\n25,0.5,1e-4\n50,0.4,1e-4\n");
        assert_eq!(loss_csv_up_to(csv, 100), csv);
        assert_eq!(loss_csv_up_to(csv, 0), "step,loss,lr\n");
    }
}
