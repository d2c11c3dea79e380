//! `ddpm train`: the trainer's flags and progress bar (the training itself is `ddpm_explorer::native::train`).

use anyhow::{Context, Result};
use clap::Args;
use ddpm_explorer::data::TrainingImages;
use ddpm_explorer::data::folder::{MAX_FOLDER_SIZE, MIN_FOLDER_SIZE};
use ddpm_explorer::diffusion::schedule::ScheduleKind;
use ddpm_explorer::model::{Preset, SkipLayout, UNetConfig};
use ddpm_explorer::native::device::{DeviceChoice, DeviceSpec, choose_device, open_devices};
use ddpm_explorer::native::train::{
    LossWeighting, LrChange, LrDecay, TrainConfig, TrainError, checkpoint_config, checkpoint_step, train,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// `train`'s flags. The recipe flags are optional: a new run takes each one it is not given from
/// [`TrainConfig::default`], a resumed run from its checkpoint's `state.json`.
#[derive(Args, Debug)]
#[command(
    after_help = "Cost on a CPU with 2 cores: the default U-Net (1.2 M parameters) trains at about 180 images/s on an \
AMD EPYC VM and 80 on an Intel Xeon VM (batch 64: 0.36 to 0.8 s a step), so the default 20,000 steps take 2 to 4.5 \
hours; --device wgpu uses a GPU when there is one."
)]
pub(crate) struct TrainArgs {
    /// Dataset: a folder of IDX files (train-images-idx3-ubyte[.gz] …), an IDX image file, or a
    /// folder of PNG/JPEG images (searched recursively; with --conditional, a first-level subfolder
    /// per class), centre-cropped and resized to --image-size.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// The network's shape: mnist (28 × 28 grey, 1.2 M parameters) or cifar10 (Ho et al.'s 32 × 32
    /// RGB net, 35.7 M parameters); the network flags below change it [default: mnist].
    #[arg(long, conflicts_with = "resume")]
    preset: Option<Preset>,
    /// Image folders: the side the images are cropped and resized to, a multiple of 2^(levels − 1)
    /// from 16 to 128 [default: the preset's, 28 or 32]. IDX files keep their own size.
    #[arg(long, conflicts_with = "resume")]
    image_size: Option<usize>,
    /// Image folders: keep the decoded images in memory up to this many MiB; a larger set is read
    /// from its files batch by batch.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    data_memory: usize,
    /// Total optimisation steps [default: 20000; on --resume, the run's own total].
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Total passes over the dataset (instead of --steps).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step [default: 64].
    #[arg(long)]
    batch: Option<usize>,
    /// Peak Adam learning rate [default: 2e-4].
    #[arg(long)]
    lr: Option<f64>,
    /// Linear learning-rate warm-up steps [default: 200].
    #[arg(long)]
    warmup: Option<usize>,
    /// EMA decay of the exported weights [default: 0.999].
    #[arg(long)]
    ema: Option<f64>,
    /// Clip the gradients' global L2 norm at this value; 0: no clipping [default: 1.0].
    #[arg(long)]
    grad_clip: Option<f64>,
    /// From this step on, the learning rate falls linearly to zero at the last step (--steps). On
    /// --resume it may be added at or after the checkpoint's step, e.g. to finish a constant-rate run.
    #[arg(long, value_name = "STEP")]
    lr_decay_from: Option<usize>,
    /// Weight the loss with Min-SNR-γ (Hang et al. 2023) with this γ (e.g. 5) instead of L_simple.
    #[arg(long)]
    min_snr_gamma: Option<f64>,
    /// Noise schedule [default: linear].
    #[arg(long)]
    schedule: Option<ScheduleKind>,
    /// Diffusion steps T [default: 1000].
    #[arg(long)]
    timesteps: Option<usize>,
    /// Seed of data order, timesteps and noise [default: 0].
    #[arg(long)]
    seed: Option<u64>,
    /// Output folder (checkpoint/, export/, samples/, loss.csv).
    #[arg(long, default_value = "runs/mnist")]
    out: PathBuf,
    /// Continue from the latest checkpoint in --out, with the recipe recorded there.
    #[arg(long)]
    resume: bool,
    /// With --resume and --lr: change the peak learning rate from the checkpoint's step on (the
    /// change is recorded in train.json, so the run stays reproducible).
    #[arg(long, requires_all = ["resume", "lr"])]
    change_lr: bool,
    /// auto (a GPU if there is one, else CPU), cpu or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Data-parallel on several devices, e.g. wgpu:0,wgpu:1 (discrete GPUs 0 and 1; also igpu:N,
    /// vgpu:N, wgpu-cpu): each step's batch is split across them and their gradients summed on the
    /// first, which holds the weights (to rounding, the step one device takes with the whole batch).
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    devices: Vec<DeviceSpec>,
    /// Write a 4×4 sample grid every N steps; 0: never [default: 1000].
    #[arg(long)]
    sample_every: Option<usize>,
    /// Write a checkpoint (and export the EMA model) every N steps [default: 500].
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Log the loss every N steps [default: 10].
    #[arg(long)]
    log_every: Option<usize>,
    /// U-Net channels at full resolution [default: 32].
    #[arg(long)]
    channels: Option<usize>,
    /// Channel multipliers per resolution level, comma-separated [default: 1,2,2].
    #[arg(long, value_delimiter = ',')]
    channel_mult: Option<Vec<usize>>,
    /// Residual blocks per level [default: 2].
    #[arg(long)]
    res_blocks: Option<usize>,
    /// Dropout in residual blocks [default: 0.1].
    #[arg(long)]
    dropout: Option<f64>,
    /// Train a class-conditional model (classifier-free guidance, Ho & Salimans 2022) on the
    /// dataset's labels; the class names are read from `classes.txt` in the dataset folder when it
    /// is there, else the labels' numbers.
    #[arg(long)]
    conditional: bool,
    /// With --conditional: the probability of replacing a label by "no class" [default: 0.1].
    #[arg(long, requires = "conditional")]
    p_uncond: Option<f64>,
    /// Start from an exported model (a folder with config.json and model.bpk) instead of random
    /// weights; its network must be this run's. With --conditional an unconditional model
    /// becomes conditional with a class embedding of zeros, so it starts as that model.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// With --conditional and --init-from: every weight but the class embedding learns at this
    /// fraction of --lr (e.g. 0.05), so the trained network drifts slowly while the classes are
    /// learned; 0 freezes it, so the model given no class stays exactly the --init-from model.
    #[arg(long, value_name = "SCALE", requires = "conditional")]
    network_lr_scale: Option<f64>,
    /// U-Net skip connections: per-level (one per resolution level) or per-block (Ho et al.'s: one
    /// per ResBlock and downsampler, one more decoder ResBlock per level) [default: per-level].
    #[arg(long)]
    skips: Option<SkipLayout>,
}

impl TrainArgs {
    /// `base` with every flag that was given applied on top (`steps` is resolved by the caller).
    fn apply_to(&self, base: TrainConfig) -> TrainConfig {
        let mut c = base;
        let set = |slot: &mut usize, v: Option<usize>| *slot = v.unwrap_or(*slot);
        set(&mut c.batch, self.batch);
        set(&mut c.warmup, self.warmup);
        set(&mut c.timesteps, self.timesteps);
        set(&mut c.sample_every, self.sample_every);
        set(&mut c.checkpoint_every, self.checkpoint_every);
        set(&mut c.log_every, self.log_every);
        set(&mut c.unet.base_channels, self.channels);
        set(&mut c.unet.res_blocks, self.res_blocks);
        if !self.change_lr {
            c.lr = self.lr.unwrap_or(c.lr);
        }
        c.ema_decay = self.ema.unwrap_or(c.ema_decay);
        c.unet.dropout = self.dropout.unwrap_or(c.unet.dropout);
        c.schedule = self.schedule.unwrap_or(c.schedule);
        c.seed = self.seed.unwrap_or(c.seed);
        if let Some(skips) = self.skips {
            c.unet.skips = Some(skips);
        }
        if let Some(mult) = &self.channel_mult {
            c.unet.channel_mult = mult.clone();
        }
        if let Some(clip) = self.grad_clip {
            c.grad_clip = (clip != 0.0).then_some(clip);
        }
        if let Some(gamma) = self.min_snr_gamma {
            c.loss_weighting = LossWeighting::MinSnr { gamma };
        }
        if let Some(p) = self.p_uncond {
            c.p_uncond = Some(p);
        }
        if let Some(init) = &self.init_from {
            c.init_from = Some(init.display().to_string());
        }
        if let Some(scale) = self.network_lr_scale {
            c.network_lr_scale = Some(scale);
        }
        c
    }
}

pub(crate) fn run(a: TrainArgs) -> Result<()> {
    let cpu_only = a.devices == [DeviceSpec::Cpu] || (a.devices.is_empty() && a.device == DeviceChoice::Cpu);
    if cpu_only && std::env::var_os("BURN_DEVICE").is_none() {
        // burn loads an optimiser's saved state onto its default device (the first GPU backend
        // compiled in) and moves it on the next step; on `--device cpu` that would open a GPU (or
        // its software driver) only to leave it. The default device follows `BURN_DEVICE`.
        // SAFETY: nothing else runs yet: no thread has been started when the command begins.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    if let Some(d) = a.dropout
        && !(0.0..1.0).contains(&d)
    {
        anyhow::bail!("--dropout must be in [0, 1) (got {d})");
    }
    // A resumed run starts from its own recipe, so continuing needs no repeated flags; a flag that
    // changes the recipe is then refused by `train` with the reason.
    let base = match (a.resume, checkpoint_config(&a.out)?) {
        (true, Some(recorded)) => recorded,
        _ => TrainConfig {
            unet: a.preset.unwrap_or(Preset::Mnist).unet(),
            ..TrainConfig::default()
        },
    };
    let mut config = a.apply_to(base);
    if let Some(size) = a.image_size {
        if !(MIN_FOLDER_SIZE..=MAX_FOLDER_SIZE).contains(&size) {
            anyhow::bail!("--image-size must be from {MIN_FOLDER_SIZE} to {MAX_FOLDER_SIZE} (got {size})");
        }
        config.unet.image_size = size;
    }
    let opened = TrainingImages::open(&a.data, config.unet.image_size, a.data_memory << 20)
        .context("loading the training data")?;
    let data = opened.source();
    if let TrainingImages::Folder(folder) = &opened {
        for skipped in folder.skipped() {
            eprintln!("skipped '{}': {}", skipped.path.display(), skipped.reason);
        }
        if !folder.in_memory() {
            eprintln!(
                "the images take more than {} MiB: each batch is read from its files",
                a.data_memory
            );
        }
    }
    if let TrainingImages::Idx(idx) = &opened {
        // IDX files keep their own size: a size asked for would be silently another.
        let wanted = a.image_size.or(a.preset.map(|p| p.unet().image_size));
        if let Some(size) = wanted.filter(|&s| s != idx.rows || s != idx.cols) {
            anyhow::bail!(
                "'{}' holds {}×{} images, not {size}×{size}: IDX files keep their size (an image folder is resized)",
                a.data.display(),
                idx.rows,
                idx.cols
            );
        }
    }
    if !a.resume {
        // A new network takes the data's shape (IDX files keep their size; a folder is resized).
        let [channels, rows, cols] = data.shape();
        config.unet.image_channels = channels;
        if rows == cols {
            config.unet.image_size = rows;
        }
    }
    if a.conditional && config.unet.num_classes.is_none() {
        let names = opened.class_names(&a.data).context("--conditional: the class names")?;
        config.unet.num_classes = Some(names.len());
        config.class_names = Some(names);
        config.p_uncond = Some(a.p_uncond.unwrap_or(DEFAULT_P_UNCOND));
    }
    config.steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => (e * data.len()).div_ceil(config.batch.max(1)),
        (None, None) => config.steps,
    };
    if a.change_lr
        && let (Some(lr), Some(step)) = (a.lr, checkpoint_step(&a.out)?)
    {
        if !(lr > 0.0 && lr.is_finite()) {
            anyhow::bail!("--lr must be a positive number (got {lr})");
        }
        config.lr_changes.push(LrChange { from_step: step, lr });
        eprintln!("the peak learning rate changes to {lr:e} from step {step} on (recorded in train.json)");
    }
    if let Some(start) = a.lr_decay_from {
        config.lr_decay = Some(LrDecay {
            start,
            end: config.steps,
        });
    }
    let steps = config.steps;
    config.validate()?;
    let chosen = match a.devices.as_slice() {
        [] => vec![choose_device(a.device)?],
        specs => open_devices(specs)?,
    };
    let on = match chosen.as_slice() {
        [one] => one.to_string(),
        several => format!(
            "{} devices ({}), the batch split across them",
            several.len(),
            several.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
    };
    let devices: Vec<_> = chosen.into_iter().map(|d| d.device).collect();
    let [channels, rows, cols] = data.shape();
    eprintln!(
        "training on {} images ({rows}×{cols}, {}) on {on}: {steps} steps of batch {}, {} parameters",
        data.len(),
        if channels == 1 { "grey" } else { "RGB" },
        config.batch,
        millions_of_parameters(&config.unet)
    );
    // A bar on a terminal; a plain line per log interval when stderr is a file or a pipe.
    let plain = !std::io::stderr().is_terminal();
    let bar = if plain {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  loss {msg}  [{elapsed_precise} < {eta_precise}]")
            .expect("valid template"),
    );
    stop_on_signals();
    let log_every = config.log_every;
    let started = std::time::Instant::now();
    let summary = train(&config, data, &a.out, &devices, a.resume, |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("{:.4}  {:.1} img/s", p.loss, p.images_per_second));
        if plain && (p.step % log_every == 0 || p.step == p.steps) {
            eprintln!(
                "step {}/{}  loss {:.4}  {:.1} img/s  elapsed {}s",
                p.step,
                p.steps,
                p.loss,
                p.images_per_second,
                started.elapsed().as_secs()
            );
        }
        if STOP.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .map_err(|e| match e {
        TrainError::RunExists(dir) => anyhow::anyhow!(
            "'{}' already holds a checkpoint: pass --resume to continue it, or choose another --out",
            dir.display()
        ),
        e => e.into(),
    })?;
    bar.finish();
    if summary.interrupted {
        eprintln!(
            "stopped at step {} by a signal: checkpoint and export written; continue with --resume",
            summary.end_step
        );
        return Ok(());
    }
    eprintln!(
        "done: steps {}..{}, last loss {:.4}, {:.1} img/s; EMA weights exported to {}",
        summary.start_step,
        summary.end_step,
        summary.last_loss,
        summary.images_per_second,
        summary.export_dir.display()
    );
    Ok(())
}

/// Set by SIGINT or SIGTERM: the run writes a checkpoint after its current step and ends.
static STOP: AtomicBool = AtomicBool::new(false);

/// Makes the first Ctrl-C (SIGINT) or SIGTERM ask the run to stop after its current step, with a
/// checkpoint; a second one ends the process at once (the checkpoint on disk stays whole, as
/// after SIGKILL).
fn stop_on_signals() {
    extern "C" fn on_signal(_: libc::c_int) {
        if STOP.swap(true, Ordering::SeqCst) {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit, both async-signal-safe.
        unsafe { libc::signal(signal, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
}

/// Ho & Salimans' label-dropout rate.
const DEFAULT_P_UNCOND: f64 = 0.1;

/// "0.83 M": the size of the network a config describes.
fn millions_of_parameters(config: &UNetConfig) -> String {
    use burn::module::Module;
    format!(
        "{:.2} M",
        config.init(&burn::tensor::Device::flex()).num_params() as f64 / 1e6
    )
}
