//! A training run in its three parts: the set-up ([`Run::open`]: checks, the folder and its lock,
//! the starting or resumed weights, `train.json`, `loss.csv`), one optimisation step
//! ([`Run::step`], Algorithm 1, checked before the weights move, its batch split across the run's
//! devices) and what it writes ([`Run::checkpoint`], [`Run::write_sample_grid`], [`Run::log_loss`]).

use super::checkpoint::{CheckpointState, loss_csv_up_to, read_checkpoint_state, save_checkpoint};
use super::conditioning::{LABEL_DROPOUT_STREAM, initial_weights};
use super::{
    DivergenceWatch, RunDir, RunLock, TrainConfig, TrainError, clip_grad_global_norm, drop_labels, ema_update,
    export_model, io_err, sample_grid, training_loss, write_loss_plot,
};
use crate::data::{BatchSampler, ImageSource};
use crate::diffusion::forward::q_sample;
use crate::diffusion::schedule::NoiseSchedule;
use crate::image::{ImageShape, split_batch};
use crate::kernels::dropout::{BatchShard, with_batch_shard};
use crate::model::UNet;
use crate::model::weights::unet_to_bytes;
use crate::native::io::{write_atomic, write_png};
use crate::rng::NoiseRng;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::module::{Module, ParamGroup};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The stream of a step's seed that seeds its network dropout (beside the label dropout's).
const NETWORK_DROPOUT_STREAM: u64 = 0xd50f;

/// A run between steps: its recipe, weights, their EMA, the optimiser and the folder it writes.
pub(super) struct Run<'c> {
    config: &'c TrainConfig,
    schedule: NoiseSchedule,
    dir: RunDir,
    /// Held while the run lives: a second run cannot write the same folder.
    _lock: RunLock,
    /// The devices a step's batch is split across, recording gradients. The first holds the
    /// weights, the optimiser and the EMA; each other one computes its shard's gradient on a copy
    /// of the weights and sends it there (burn's multi-device strategy with the optimiser on the
    /// main device: `GradientsParams::to_device` and `GradientsAccumulator`).
    train_devices: Vec<Device>,
    plain_device: Device,
    model: UNet,
    ema: UNet,
    optim: ModuleOptimizer,
    /// With a network learning-rate scale above 0: the class table's parameters, which keep the
    /// run's full rate.
    class_table: Option<ParamGroup>,
    batches: BatchSampler,
    watch: DivergenceWatch,
    loss_log: File,
    /// The step this run starts from (0, or the checkpoint's).
    pub start_step: usize,
}

impl<'c> Run<'c> {
    /// Checks `config` against `data`, takes the folder `out`, and starts from the seeded
    /// initialisation, `config.init_from`, or (with `resume`) the folder's latest checkpoint. The
    /// weights live on `devices[0]`; each step's batch is split across all of `devices`.
    pub fn open(
        config: &'c TrainConfig,
        data: &dyn ImageSource,
        out: &Path,
        devices: &[Device],
        resume: bool,
    ) -> Result<Self, TrainError> {
        config.validate()?;
        check_data(config, data)?;
        let Some(device) = devices.first() else {
            return Err(TrainError::Settings("training needs a device".into()));
        };
        if devices.len() > config.batch {
            return Err(TrainError::Settings(format!(
                "a batch of {} images cannot be split across {} devices",
                config.batch,
                devices.len()
            )));
        }
        let schedule =
            NoiseSchedule::new(config.schedule, config.timesteps).map_err(|e| TrainError::Settings(e.to_string()))?;
        let dir = RunDir::new(out);
        let lock = RunLock::acquire(out)?;
        std::fs::create_dir_all(dir.samples()).map_err(io_err(format!("creating {}", out.display())))?;
        let train_device = device.clone().autodiff();
        let plain_device = device.clone();

        // Seeded initialisation, and every later draw seeded by the step: a run is reproducible,
        // and a resumed run takes the same steps as an uninterrupted one.
        train_device.seed(config.seed);
        let mut model = config.unet.init(&train_device);
        let mut optim = AdamConfig::new().init();
        let mut ema = model.valid();
        let mut start_step = 0;
        if resume {
            (model, ema, optim, start_step) = resumed(config, &dir, optim, &train_device, &plain_device)?;
        } else if dir.resumable().is_some() {
            return Err(TrainError::RunExists(out.to_path_buf()));
        } else if let Some(init) = &config.init_from {
            (model, ema) = initial_weights(Path::new(init), config, &train_device)?;
        }
        if config.network_lr_scale == Some(0.0) {
            model = model.frozen_but_class_embedding();
        }
        write_atomic(
            &out.join("train.json"),
            serde_json::to_string_pretty(config).expect("serialises").as_bytes(),
        )
        .map_err(io_err("writing train.json"))?;
        let loss_log = open_loss_log(&dir, resume, start_step)?;
        let class_table = match (config.network_lr_scale, model.class_embedding()) {
            (Some(scale), Some(table)) if scale > 0.0 => Some(ParamGroup::ids_from_module(table.clone())),
            _ => None,
        };
        Ok(Self {
            config,
            schedule,
            dir,
            _lock: lock,
            train_devices: devices.iter().map(|d| d.clone().autodiff()).collect(),
            plain_device,
            model,
            ema,
            optim,
            class_table,
            batches: BatchSampler::new(data.len(), config.seed),
            watch: DivergenceWatch::default(),
            loss_log,
            start_step,
        })
    }

    /// Step `step` (0-based) of Algorithm 1: x_0 ~ q(x_0), t ~ Uniform, ε ~ N(0, I), a step on
    /// ∇ w_t ‖ε − ε_θ(x_t, t)‖², then the EMA. Every step's loss and gradient norm are read back and
    /// checked before the weights move, so a bad step never reaches the weights, a checkpoint or an
    /// export. Returns the step's loss.
    ///
    /// The draws are made on the host for the whole batch, then the batch is cut into one shard per
    /// device; each device computes its shard's share of the loss (its mean scaled by its share of
    /// the images) and the gradient of it, and the main device sums them: the gradient of the
    /// whole batch's loss, to rounding, on any number of devices.
    pub fn step(&mut self, step: usize, data: &dyn ImageSource) -> Result<f64, TrainError> {
        let config = self.config;
        let indices = self.batches.batch_at(step, config.batch);
        let step_seed = NoiseRng::stream_seed(config.seed, step as u64);
        let mut rng = NoiseRng::new(step_seed);
        let t: Vec<usize> = (0..config.batch).map(|_| rng.below(config.timesteps)).collect();
        let x0 = data.read(&indices)?;
        let noise = rng.normal_vec(x0.len());
        let classes = config.p_uncond.map(|p| {
            // Its own stream, so the draws of t and ε are those of an unconditional run.
            let mut rng = NoiseRng::new(NoiseRng::stream_seed(step_seed, LABEL_DROPOUT_STREAM));
            drop_labels(indices.iter().map(|&i| data.labels()[i]), p, &mut rng)
        });
        let batch = StepBatch {
            image: ImageShape {
                channels: config.unet.image_channels,
                size: config.unet.image_size,
            },
            x0,
            noise,
            t,
            classes,
            dropout_seed: NoiseRng::stream_seed(step_seed, NETWORK_DROPOUT_STREAM),
        };
        let main = &self.train_devices[0];
        let shard_step = |model: UNet, device: &Device, shard: Range<usize>| {
            shard_gradients(model, device, main, shard, &batch, config, &self.schedule)
        };
        let results: Vec<(f64, GradientsParams)> = match self.train_devices.as_slice() {
            [device] => vec![shard_step(self.model.clone(), device, 0..config.batch)],
            devices => std::thread::scope(|scope| {
                let running: Vec<_> = devices
                    .iter()
                    .zip(split_batch(config.batch, devices.len()))
                    .map(|(device, shard)| {
                        let model = self.model.clone();
                        scope.spawn(move || shard_step(model, device, shard))
                    })
                    .collect();
                running
                    .into_iter()
                    .map(|shard| shard.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect()
            }),
        };
        let mut accumulator = GradientsAccumulator::new();
        let mut step_loss = 0.0;
        for (loss, grads) in results {
            step_loss += loss;
            accumulator.accumulate(&self.model, grads);
        }
        self.watch.check_loss(step + 1, step_loss)?;
        let grads = accumulator.grads();
        // Without clipping the norm is still taken (a scale of exactly 1 changes no gradient).
        let (grads, norm) = clip_grad_global_norm(grads, &self.model, config.grad_clip.unwrap_or(f64::INFINITY));
        if let Some(norm) = norm {
            self.watch.check_grad_norm(step + 1, norm.into_scalar::<f32>() as f64)?;
        }
        let lr = config.lr_at(step);
        self.model = match (&self.class_table, config.network_lr_scale) {
            // The class table at the run's rate, the rest of the network at its fraction.
            (Some(table), Some(scale)) => {
                let rates = ModuleLrScheduler::new(lr * scale).with_group(table.clone(), lr).step();
                self.optim.step(rates, self.model.clone(), grads)
            }
            _ => self.optim.step(lr, self.model.clone(), grads),
        };
        self.ema = ema_update(self.ema.clone(), &self.model, config.ema_decay, step);
        Ok(step_loss)
    }

    /// Appends a line to `loss.csv`.
    pub fn log_loss(&mut self, step: usize, loss: f64, lr: f64) -> Result<(), TrainError> {
        writeln!(self.loss_log, "{step},{loss:.6},{lr:.3e}").map_err(io_err("appending to loss.csv"))
    }

    /// Writes the EMA's sample grid for step `step`.
    pub fn write_sample_grid(&self, step: usize) -> Result<(), TrainError> {
        let grid = sample_grid(
            &self.ema,
            &self.schedule,
            [self.config.unet.image_channels, self.config.unet.image_size],
            16,
            self.config.seed,
            &self.plain_device,
        );
        write_png(&self.dir.samples().join(format!("step_{step:07}.png")), &grid)
            .map_err(io_err("writing a sample grid"))
    }

    /// Writes the checkpoint, the EMA's export and the loss plot at step `step`. While the loss is
    /// above the divergence threshold it waits: only weights whose loss is back to normal are kept.
    pub fn checkpoint(&self, step: usize) -> Result<(), TrainError> {
        if !self.watch.healthy() {
            return Ok(());
        }
        let state = CheckpointState {
            step,
            config: self.config.clone(),
        };
        save_checkpoint(&self.dir, &self.model, &self.ema, &self.optim, &state)?;
        let weights = unet_to_bytes(self.ema.clone())?;
        export_model(&self.dir.export(), &self.config.diffusion_config(), &weights)?;
        write_loss_plot(&self.dir)
    }

    /// Where the EMA model is exported.
    pub fn export_dir(&self) -> PathBuf {
        self.dir.export()
    }
}

/// A step's draws for the whole batch, on the host.
struct StepBatch {
    /// The shape of each image.
    image: ImageShape,
    /// x_0, image after image.
    x0: Vec<f32>,
    /// ε, image after image.
    noise: Vec<f32>,
    /// t per image.
    t: Vec<usize>,
    /// The label per image (`None`: "no class") in a conditional run.
    classes: Option<Vec<Option<usize>>>,
    /// The seed of the network's dropout masks.
    dropout_seed: u64,
}

/// The images `shard` of `batch` on `device`: their share of the step's loss (their mean loss ×
/// their share of the batch), read back, and its gradient for `model`'s parameters, on `main`.
fn shard_gradients(
    model: UNet,
    device: &Device,
    main: &Device,
    shard: Range<usize>,
    batch: &StepBatch,
    config: &TrainConfig,
    schedule: &NoiseSchedule,
) -> (f64, GradientsParams) {
    let model = if device == main { model } else { model.fork(device) };
    let per_image = batch.image.values();
    let images = |values: &[f32]| {
        let values = values[shard.start * per_image..shard.end * per_image].to_vec();
        Tensor::<4>::from_data(TensorData::new(values, batch.image.batch(shard.len())), device)
    };
    let (x0, noise) = (images(&batch.x0), images(&batch.noise)); // [n, c, s, s] each
    let t = &batch.t[shard.clone()];
    let classes = batch.classes.as_ref().map(|c| &c[shard.clone()]);
    let x_t = q_sample(schedule, x0, t, noise.clone()); // [n, c, s, s]
    let dropout = BatchShard {
        seed: batch.dropout_seed,
        first_image: shard.start,
    };
    let eps = with_batch_shard(dropout, || model.forward_classes(x_t, t, classes)); // [n, c, s, s]
    let share = shard.len() as f64 / batch.t.len() as f64;
    let loss = training_loss(eps, noise, t, config.loss_weighting, schedule).mul_scalar(share); // [1]
    let value = loss.clone().into_scalar::<f32>() as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &model).to_device(main, &model);
    (value, grads)
}

/// The data must be the model's size, and a conditional run needs a label in range per image.
fn check_data(config: &TrainConfig, data: &dyn ImageSource) -> Result<(), TrainError> {
    let [channels, rows, cols] = data.shape();
    let (c, s) = (config.unet.image_channels, config.unet.image_size);
    if [channels, rows, cols] != [c, s, s] {
        let kind = |c: usize| if c == 1 { "grey" } else { "colour" };
        return Err(TrainError::Settings(format!(
            "the dataset's images are {rows}×{cols} {} but the model expects {s}×{s} {}",
            kind(channels),
            kind(c)
        )));
    }
    if let Some(n) = config.unet.num_classes {
        let labels = data.labels();
        if labels.len() != data.len() {
            return Err(TrainError::Settings(
                "conditional training needs the dataset's labels (the labels-idx1 file beside IDX images, or a \
                 first-level subfolder per class in an image folder)"
                    .into(),
            ));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n) {
            return Err(TrainError::Settings(format!(
                "the dataset has label {bad} but the model has {n} classes"
            )));
        }
    }
    Ok(())
}

/// The weights, EMA, optimiser and step of the folder's latest checkpoint, whose recipe `config`
/// must continue.
fn resumed(
    config: &TrainConfig,
    dir: &RunDir,
    optim: ModuleOptimizer,
    train_device: &Device,
    plain_device: &Device,
) -> Result<(UNet, UNet, ModuleOptimizer, usize), TrainError> {
    let Some(checkpoint) = dir.resumable() else {
        return Err(TrainError::Resume {
            path: dir.checkpoint().display().to_string(),
            reason: "no checkpoint there (start a new run instead)".into(),
        });
    };
    let shown = checkpoint.display().to_string();
    let resume_err = |reason: String| TrainError::Resume {
        path: shown.clone(),
        reason,
    };
    let state = read_checkpoint_state(&checkpoint)?;
    if !config.continues(&state.config, state.step) {
        return Err(resume_err(format!(
            "its recipe (model, schedule, batch, lr, warm-up, EMA, seed) differs from these settings; \
             only the number of steps, the intervals, the gradient clipping, a learning-rate decay \
             that begins at or after the checkpoint's step {} and a new rate asked for with \
             --change-lr may change when resuming",
            state.step
        )));
    }
    let read = |name: &str| std::fs::read(checkpoint.join(name)).map_err(|e| resume_err(format!("{name}: {e}")));
    let diffusion = config.diffusion_config();
    let model = diffusion.load_unet(read("model.bpk")?, train_device)?;
    let ema = diffusion.load_unet(read("ema.bpk")?, plain_device)?;
    let optim = optim
        .from_bytes(burn::tensor::Bytes::from_bytes_vec(read("optim.bpk")?))
        .map_err(|e| resume_err(format!("optim.bpk: {e}")))?;
    Ok((model, ema, optim, state.step))
}

/// `loss.csv`, opened for appending: new for a new run; for a resumed one, cut back to the
/// checkpoint's step (a run that died after its last checkpoint logged steps it will train again).
fn open_loss_log(dir: &RunDir, resume: bool, start_step: usize) -> Result<File, TrainError> {
    if !resume || !dir.loss_csv().exists() {
        write_atomic(&dir.loss_csv(), b"step,loss,lr\n").map_err(io_err("writing loss.csv"))?;
    } else {
        let csv = std::fs::read_to_string(dir.loss_csv()).map_err(io_err("reading loss.csv"))?;
        let kept = loss_csv_up_to(&csv, start_step);
        if kept.len() != csv.len() {
            write_atomic(&dir.loss_csv(), kept.as_bytes()).map_err(io_err("rewriting loss.csv"))?;
        }
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.loss_csv())
        .map_err(io_err("opening loss.csv"))
}
