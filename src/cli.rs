//! The command line: `train`, `sample`, `schedule`, `export`, `classifier`, `eval` and `plot-loss`.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ddpm_explorer::data::{ImageDataset, Split};
use ddpm_explorer::device::{DeviceChoice, choose_device};
use ddpm_explorer::image::GrayImage;
use ddpm_explorer::io::write_png;
use ddpm_explorer::model::UNetConfig;
use ddpm_explorer::sampler::{ReverseChain, SamplerConfig, VarianceKind};
use ddpm_explorer::schedule::{NoiseSchedule, ScheduleKind, ScheduleRow};
use ddpm_explorer::train::{LossWeighting, TrainConfig, checkpoint_config, train};
use ddpm_explorer::weights::load_model;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

/// Denoising Diffusion Probabilistic Models you can watch and touch.
#[derive(Parser, Debug)]
#[command(name = "ddpm", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train the U-Net on MNIST (or any 28×28 IDX dataset) with Ho et al.'s simplified loss.
    Train(TrainArgs),
    /// Generate digits with trained weights (DDPM or DDIM).
    Sample(SampleArgs),
    /// Print the noise schedule's numbers (β, ᾱ, posterior coefficients, SNR).
    Schedule(ScheduleArgs),
    /// Copy a trained model (config.json + model.bpk) to a folder, optionally in half precision.
    Export(ExportArgs),
    /// Train the project's MNIST classifier (the judge of `eval`) and report its test accuracy.
    Classifier(ClassifierArgs),
    /// Judge trained weights: sample quality in the classifier's eyes and the likelihood bound.
    Eval(EvalArgs),
    /// Draw a run's loss.csv as an SVG chart.
    PlotLoss(PlotLossArgs),
}

#[derive(Args, Debug)]
struct ClassifierArgs {
    /// Dataset folder with train-* and t10k-* IDX files (images and labels).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Folder to write classifier.json and classifier.bpk into.
    #[arg(long, default_value = "training/classifier")]
    out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak Adam learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of data order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Cost on a CPU (2 cores, the shipped 0.83 M U-Net): DDIM-50 makes 1,000 digits in a few minutes, \
DDPM-1000 takes 20 times as long; the full bound (all 1,000 terms) costs about 10 s per held-out digit \
(--bpd-stride k divides that by k)."
)]
struct EvalArgs {
    /// Model folder (config.json + model.bpk).
    #[arg(long, default_value = "assets")]
    weights: PathBuf,
    /// Classifier folder (classifier.json + classifier.bpk), made by `ddpm classifier`.
    #[arg(long, default_value = "training/classifier")]
    classifier: PathBuf,
    /// Dataset folder: the held-out split is the reference set, the training split the yardstick.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Images per sample set and run (and real digits in the yardstick). Fewer than the classifier's
    /// 128 features leave the covariance rank-deficient: the Fréchet distance then mostly measures N.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Runs per set, each with its own seed (seed, seed + 1, …): the figures are printed as the mean
    /// ± its standard error over the runs.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Sample sets to judge: ddimN (DDIM with N steps, η = 0), ddpm (all T steps, σ² = β̃) or
    /// ddpm-beta (σ² = β).
    #[arg(long, value_delimiter = ',', default_value = "ddim50")]
    samplers: Vec<String>,
    /// Images per sampling batch.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Held-out images for the bits/dim bound (0: skip it).
    #[arg(long, default_value_t = 100)]
    bpd_images: usize,
    /// Evaluate every k-th term of the bound (1: all T terms; k > 1: unbiased estimate at 1/k of the cost).
    #[arg(long, default_value_t = 1)]
    bpd_stride: usize,
    /// Seed of the first run's samples and of the bound's noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct PlotLossArgs {
    /// The run's loss.csv.
    #[arg(long, default_value = "runs/mnist/loss.csv")]
    csv: PathBuf,
    /// SVG file to write.
    #[arg(long)]
    out: PathBuf,
    /// Logged values in the moving average.
    #[arg(long, default_value_t = 20)]
    window: usize,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// Model folder to read (e.g. runs/mnist/export).
    #[arg(long)]
    weights: PathBuf,
    /// Folder to write config.json and model.bpk into (e.g. assets).
    #[arg(long)]
    out: PathBuf,
    /// Store the weights as f16 (half the download; measured output change is printed).
    #[arg(long)]
    half: bool,
}

/// `train`'s flags. The recipe flags are optional: a new run takes each one it is not given from
/// [`TrainConfig::default`], a resumed run from its checkpoint's `state.json`.
#[derive(Args, Debug)]
#[command(
    after_help = "Cost on a CPU: the default U-Net (1.2 M parameters) trains at roughly 40 images/s on 2 cores \
(batch 64: about 1.6 s a step), so the default 20,000 steps take about 9 hours; --device wgpu uses a GPU when there is one."
)]
struct TrainArgs {
    /// Dataset: a folder of IDX files (train-images-idx3-ubyte[.gz] …) or an IDX image file.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
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
    /// auto (a GPU if there is one, else CPU), cpu or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
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
        c.lr = self.lr.unwrap_or(c.lr);
        c.ema_decay = self.ema.unwrap_or(c.ema_decay);
        c.unet.dropout = self.dropout.unwrap_or(c.unet.dropout);
        c.schedule = self.schedule.unwrap_or(c.schedule);
        c.seed = self.seed.unwrap_or(c.seed);
        if let Some(mult) = &self.channel_mult {
            c.unet.channel_mult = mult.clone();
        }
        if let Some(clip) = self.grad_clip {
            c.grad_clip = (clip != 0.0).then_some(clip);
        }
        if let Some(gamma) = self.min_snr_gamma {
            c.loss_weighting = LossWeighting::MinSnr { gamma };
        }
        c
    }
}

#[derive(Args, Debug)]
struct SampleArgs {
    /// Model folder (config.json + model.bpk) or a .bpk file with config.json beside it.
    #[arg(long, default_value = "assets")]
    weights: PathBuf,
    /// Number of images.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// ddpm (all T steps) or ddim.
    #[arg(long, default_value = "ddim", value_parser = ["ddpm", "ddim"])]
    sampler: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// DDIM η in [0, 1] (0: deterministic).
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// DDPM variance: beta or beta-tilde.
    #[arg(long, default_value = "beta-tilde")]
    variance: VarianceKind,
    /// Do not clip x̂_0 to [−1, 1].
    #[arg(long)]
    no_clip: bool,
    /// Seed of x_T and the noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write a grid of all images to this PNG.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write one 28×28 grayscale PNG per image into this folder.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write the reverse chain of the first image (x_t above x̂_0) as a strip PNG.
    #[arg(long)]
    chain: Option<PathBuf>,
    /// Frames in the chain strip after x_T (evenly spread over the steps, the last is x_0).
    #[arg(long, default_value_t = 10)]
    chain_frames: usize,
    /// Latent walk: write to --out a strip of --n digits decoded (DDIM, η = 0) from x_T's spherically
    /// interpolated between --seed's and this seed's; its ends are the two seeds' own samples.
    #[arg(long, value_name = "SEED")]
    interpolate: Option<u64>,
    /// auto, cpu or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

#[derive(Args, Debug)]
struct ScheduleArgs {
    /// linear or cosine.
    #[arg(long, default_value = "linear")]
    schedule: ScheduleKind,
    /// T.
    #[arg(long, default_value_t = 1000)]
    timesteps: usize,
    /// Timesteps to print, comma-separated (default: a spread over 0..T).
    #[arg(long, value_delimiter = ',')]
    t: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => run_train(a),
        Command::Sample(a) => run_sample(a),
        Command::Schedule(a) => run_schedule(a),
        Command::Export(a) => run_export(a),
        Command::Classifier(a) => run_classifier(a),
        Command::Eval(a) => run_eval(a),
        Command::PlotLoss(a) => run_plot_loss(a),
    }
}

fn run_plot_loss(a: PlotLossArgs) -> Result<()> {
    let csv = std::fs::read_to_string(&a.csv).with_context(|| format!("reading '{}'", a.csv.display()))?;
    let (svg, points) = ddpm_explorer::plot::loss_chart(&csv, a.window);
    if points == 0 {
        bail!("'{}' holds no losses (expected lines of step,loss,lr)", a.csv.display());
    }
    ddpm_explorer::io::write_atomic(&a.out, svg.as_bytes())
        .with_context(|| format!("writing '{}'", a.out.display()))?;
    eprintln!("wrote {} ({points} points)", a.out.display());
    Ok(())
}

fn run_classifier(a: ClassifierArgs) -> Result<()> {
    use ddpm_explorer::eval::classifier::train_classifier;
    let train = ImageDataset::load(&a.data, Split::Train).context("loading the training split")?;
    let test = ImageDataset::load(&a.data, Split::Test).context("loading the held-out split")?;
    let device = burn::tensor::Device::flex();
    eprintln!(
        "training the classifier on {} digits, testing on {} held-out ones ({} epochs)",
        train.len(),
        test.len(),
        a.epochs
    );
    let started = std::time::Instant::now();
    let record = train_classifier(
        &train,
        &test,
        a.epochs,
        a.batch,
        a.lr,
        a.seed,
        &a.out,
        &device,
        |epoch, acc| {
            eprintln!(
                "epoch {epoch:>3}: held-out accuracy {:.2} %  ({:.0} s)",
                acc * 100.0,
                started.elapsed().as_secs_f64()
            )
        },
    )
    .map_err(anyhow::Error::msg)?;
    eprintln!(
        "wrote {} : test accuracy {:.2} % on {} digits",
        a.out.display(),
        record.test_accuracy * 100.0,
        record.test_images
    );
    Ok(())
}

/// A sample set named on the command line: `ddimN` or `ddpm`.
fn parse_sample_set(name: &str) -> Result<(String, SamplerConfig)> {
    for (set, label, variance) in [
        ("ddpm", "DDPM (all steps, σ² = β̃)", VarianceKind::BetaTilde),
        ("ddpm-beta", "DDPM (all steps, σ² = β)", VarianceKind::Beta),
    ] {
        if name == set {
            return Ok((
                label.into(),
                SamplerConfig::Ddpm {
                    variance,
                    clip_x0: true,
                },
            ));
        }
    }
    match name.strip_prefix("ddim").map(str::parse::<usize>) {
        Some(Ok(steps)) => Ok((
            format!("DDIM-{steps} (η = 0)"),
            SamplerConfig::Ddim {
                steps,
                eta: 0.0,
                clip_x0: true,
            },
        )),
        _ => bail!("unknown sample set '{name}': expected ddpm, ddpm-beta or ddimN (e.g. ddim50)"),
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    use ddpm_explorer::eval::classifier::{dataset_pixels, load_classifier};
    use ddpm_explorer::eval::{EvalReport, NllSummary, SetSummary, quality};
    use ddpm_explorer::rng::NoiseRng;
    use ddpm_explorer::vlb::estimate_bits_per_dim_for;
    if a.n < 2 {
        bail!("--n must be at least 2 (a covariance needs two images)");
    }
    if a.batch == 0 || a.runs == 0 {
        bail!("--batch and --runs must be at least 1");
    }
    let sets = a
        .samplers
        .iter()
        .map(|name| parse_sample_set(name))
        .collect::<Result<Vec<_>>>()?;
    let device = burn::tensor::Device::flex();
    let (config, unet) =
        load_model(&a.weights, &device).with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    let (record, classifier) = load_classifier(&a.classifier, &device)
        .map_err(anyhow::Error::msg)
        .with_context(|| {
            format!(
                "loading the classifier (make one with `ddpm classifier --out {}`)",
                a.classifier.display()
            )
        })?;
    let train = ImageDataset::load(&a.data, Split::Train).context("loading the training split")?;
    let test = ImageDataset::load(&a.data, Split::Test).context("loading the held-out split")?;
    let schedule = config.noise_schedule()?;
    let size = config.unet.image_size;
    if size != 28 || config.unet.image_channels != 1 {
        bail!(
            "the classifier judges 28×28 grayscale digits; these weights make {size}×{size}×{}",
            config.unet.image_channels
        );
    }
    let features = classifier.feature_count();
    if a.n < features {
        eprintln!(
            "warning: --n {} is below the {features} feature dimensions: the covariances are rank-deficient and \
             the Fréchet distances are inflated; compare them only with the yardstick at the same N",
            a.n
        );
    }
    if a.n > train.len() {
        bail!(
            "--n {} is more than the {} training digits of the yardstick",
            a.n,
            train.len()
        );
    }
    eprintln!(
        "classifier: {:.2} % on {} held-out digits; reference set: the {} held-out digits",
        record.test_accuracy * 100.0,
        record.test_images,
        test.len()
    );
    let reference = classifier.describe(&dataset_pixels(&test, 0..test.len()), &device);
    let seeds: Vec<u64> = (0..a.runs as u64).map(|k| a.seed.wrapping_add(k)).collect();

    // The yardstick: real training digits, as many as each sample set has, a fresh draw per run.
    let real_runs = seeds
        .iter()
        .map(|&seed| {
            let mut indices: Vec<usize> = (0..train.len()).collect();
            NoiseRng::new(seed).shuffle(&mut indices);
            let real = dataset_pixels(&train, indices.into_iter().take(a.n));
            quality("real digits (training split)", &classifier, &real, &reference, &device)
        })
        .collect();
    let mut summaries = vec![SetSummary::of("real digits (training split)", real_runs, 0.0)];

    for (label, sampler_config) in &sets {
        let steps = sampler_config.build(&schedule)?.timesteps().len();
        let bar = ProgressBar::new((a.runs * a.n.div_ceil(a.batch) * steps) as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]",
        )?);
        bar.set_message(label.clone());
        let started = std::time::Instant::now();
        let mut runs = Vec::new();
        for &seed in &seeds {
            let mut images = Vec::with_capacity(a.n * size * size);
            for (k, from) in (0..a.n).step_by(a.batch).enumerate() {
                let count = a.batch.min(a.n - from);
                let sampler = sampler_config.build(&schedule)?;
                let chain_seed = NoiseRng::stream_seed(seed, k as u64);
                let mut chain = ReverseChain::from_noise(&unet, sampler, [count, 1, size, size], chain_seed, &device);
                while chain.step().is_some() {
                    bar.inc(1);
                }
                images.extend_from_slice(chain.current().into_data().as_slice::<f32>().expect("f32 samples"));
            }
            runs.push(quality(label, &classifier, &images, &reference, &device));
        }
        bar.finish_and_clear();
        summaries.push(SetSummary::of(label, runs, started.elapsed().as_secs_f64()));
    }

    println!(
        "sample quality ({} images per set and run, {} run(s), mean ± standard error over the runs; reference: {} held-out digits):",
        a.n,
        a.runs,
        test.len()
    );
    println!(
        "{:<30} {:>16} {:>16} {:>18} {:>13} {:>8}",
        "set", "Fréchet", "conf > 0.9 (%)", "class entropy (bits)", "classes (%)", "seconds"
    );
    for s in &summaries {
        let (lo, hi) = s.class_share_range();
        println!(
            "{:<30} {:>16} {:>16} {:>18} {:>13} {:>8.0}",
            s.name,
            s.frechet_distance.show(2, 1.0),
            s.confident_share.show(1, 100.0),
            s.class_entropy_bits.show(3, 1.0),
            format!("{:.1}–{:.1}", lo * 100.0, hi * 100.0),
            s.seconds
        );
    }

    let mut nll = Vec::new();
    if a.bpd_images > 0 {
        let count = a.bpd_images.min(test.len());
        let x0 = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(dataset_pixels(&test, 0..count), [count, 1, size, size]),
            &device,
        ); // [count, 1, 28, 28]
        let evaluations = 1 + (schedule.timesteps() - 1).div_ceil(a.bpd_stride.max(1));
        let bar = ProgressBar::new(evaluations as u64);
        bar.set_message("bits/dim");
        let started = std::time::Instant::now();
        let variances = [VarianceKind::BetaTilde, VarianceKind::Beta];
        let estimates = estimate_bits_per_dim_for(&unet, &schedule, &variances, x0, a.seed, a.bpd_stride, |done| {
            bar.set_position(done as u64)
        });
        bar.finish_and_clear();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        for (variance, estimate) in variances.iter().zip(estimates) {
            let summary = NllSummary {
                variance: variance.to_string(),
                images: count,
                bits_per_dim: ddpm_explorer::eval::Measured::of(&estimate.total()),
                decoder_l0: mean(&estimate.decoder),
                prior_lt: mean(&estimate.prior),
                stride: a.bpd_stride.max(1),
            };
            println!(
                "NLL bound on {count} held-out digits, σ² = {}: {} bits/dim (± standard error over the images; \
                 L_0 {:.3}, L_1…L_(T-1) {:.3}, L_T {:.5}; {})",
                if *variance == VarianceKind::Beta { "β" } else { "β̃" },
                summary.bits_per_dim.show(3, 1.0),
                summary.decoder_l0,
                mean(&estimate.terms) - summary.decoder_l0,
                summary.prior_lt,
                if summary.stride == 1 {
                    format!("all {} terms", schedule.timesteps())
                } else {
                    format!("every {}th of {} terms, unbiased", summary.stride, schedule.timesteps())
                },
            );
            nll.push(summary);
        }
        eprintln!("bound computed in {:.0} s", started.elapsed().as_secs_f64());
    }
    if let Some(path) = &a.json {
        let report = EvalReport {
            weights: a.weights.display().to_string(),
            classifier_test_accuracy: record.test_accuracy,
            seeds,
            reference_images: test.len(),
            sets: summaries,
            nll,
        };
        ddpm_explorer::io::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing '{}'", path.display()))?;
    }
    Ok(())
}

fn run_export(a: ExportArgs) -> Result<()> {
    use ddpm_explorer::io::write_atomic;
    use ddpm_explorer::weights::{CONFIG_FILE, WEIGHTS_FILE, unet_to_bytes, unet_to_half_bytes};
    let device = burn::tensor::Device::flex();
    let (config, unet) =
        load_model(&a.weights, &device).with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    let bytes = if a.half {
        unet_to_half_bytes(&unet)?
    } else {
        unet_to_bytes(unet.clone())?
    };
    // How much the stored precision changes ε̂, on a fixed batch of noisy inputs.
    let exported = config.load_unet(bytes.clone(), &device)?;
    let size = config.unet.image_size;
    let x = ddpm_explorer::sampler::chain::normal_tensor(
        &mut ddpm_explorer::rng::NoiseRng::new(0),
        [8, config.unet.image_channels, size, size],
        &device,
    );
    let t: Vec<usize> = (0..8).map(|i| i * (config.timesteps - 1) / 7).collect();
    let diff = (unet.forward(x.clone(), &t) - exported.forward(x, &t))
        .abs()
        .max()
        .into_scalar::<f32>();
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating '{}'", a.out.display()))?;
    write_atomic(&a.out.join(WEIGHTS_FILE), &bytes).context("writing the weights")?;
    write_atomic(&a.out.join(CONFIG_FILE), config.to_json().as_bytes()).context("writing config.json")?;
    eprintln!(
        "wrote {} ({} bytes, {}) and {}; largest change of ε̂ on 8 test inputs: {diff:.2e}",
        a.out.join(WEIGHTS_FILE).display(),
        bytes.len(),
        if a.half { "f16" } else { "f32" },
        a.out.join(CONFIG_FILE).display()
    );
    Ok(())
}

fn run_train(a: TrainArgs) -> Result<()> {
    let data = ImageDataset::load(&a.data, Split::Train).context("loading the training data")?;
    // A resumed run starts from its own recipe, so continuing needs no repeated flags; a flag that
    // changes the recipe is then refused by `train` with the reason.
    let base = match (a.resume, checkpoint_config(&a.out)?) {
        (true, Some(recorded)) => recorded,
        _ => TrainConfig::default(),
    };
    let mut config = a.apply_to(base);
    config.steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => (e * data.len()).div_ceil(config.batch.max(1)),
        (None, None) => config.steps,
    };
    let steps = config.steps;
    config.validate()?;
    let chosen = choose_device(a.device).map_err(anyhow::Error::msg)?;
    eprintln!(
        "training on {} images ({}×{}) on {chosen}: {steps} steps of batch {}, {} parameters",
        data.len(),
        data.rows,
        data.cols,
        config.batch,
        millions_of_parameters(&config.unet)
    );
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} steps  loss {msg}  [{elapsed_precise} < {eta_precise}]")
            .expect("valid template"),
    );
    let summary = train(&config, &data, &a.out, &chosen.device, a.resume, |p| {
        bar.set_position(p.step as u64);
        bar.set_message(format!("{:.4}  {:.1} img/s", p.loss, p.images_per_second));
    })?;
    bar.finish();
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

/// "0.83 M": the size of the network a config describes.
fn millions_of_parameters(config: &UNetConfig) -> String {
    use burn::module::Module;
    format!(
        "{:.2} M",
        config.init(&burn::tensor::Device::flex()).num_params() as f64 / 1e6
    )
}

/// `sample --interpolate`: the latent walk from `--seed` to `other` as one strip.
fn write_latent_walk(
    a: &SampleArgs,
    other: u64,
    unet: &ddpm_explorer::model::UNet,
    sampler_config: &SamplerConfig,
    schedule: &NoiseSchedule,
    image: [usize; 3],
    chosen: &ddpm_explorer::device::ChosenDevice,
) -> Result<()> {
    use ddpm_explorer::sampler::interpolate::interpolate_seeds;
    if !matches!(sampler_config, SamplerConfig::Ddim { eta, .. } if *eta == 0.0) {
        bail!("--interpolate decodes with deterministic DDIM: use --sampler ddim with --eta 0");
    }
    let Some(path) = &a.out else {
        bail!("--interpolate writes a strip: pass --out FILE.png");
    };
    if a.n < 2 {
        bail!("--interpolate needs --n of at least 2 (the two ends)");
    }
    let size = image[1];
    let strip = interpolate_seeds(
        unet,
        sampler_config.build(schedule)?,
        image,
        (a.seed, other),
        a.n,
        &chosen.device,
    ); // [n, c, s, s]
    let data = strip.into_data();
    let image = GrayImage::grid(data.as_slice::<f32>().expect("f32 samples"), size, a.n, 2);
    write_png(path, &image).with_context(|| format!("writing '{}'", path.display()))?;
    eprintln!(
        "wrote the latent walk from seed {} to seed {other} ({} digits) to {}",
        a.seed,
        a.n,
        path.display()
    );
    Ok(())
}

fn run_sample(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if a.out.is_none() && a.out_dir.is_none() && a.chain.is_none() {
        bail!("nothing to write: pass --out FILE.png, --out-dir DIR or --chain FILE.png");
    }
    let chosen = choose_device(a.device).map_err(anyhow::Error::msg)?;
    let (config, unet) = load_model(&a.weights, &chosen.device)
        .with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    let schedule = config.noise_schedule()?;
    let sampler_config = match a.sampler.as_str() {
        "ddpm" => SamplerConfig::Ddpm {
            variance: a.variance,
            clip_x0: !a.no_clip,
        },
        _ => SamplerConfig::Ddim {
            steps: a.steps,
            eta: a.eta,
            clip_x0: !a.no_clip,
        },
    };
    let size = config.unet.image_size;
    if let Some(other) = a.interpolate {
        let image = [config.unet.image_channels, size, size];
        return write_latent_walk(&a, other, &unet, &sampler_config, &schedule, image, &chosen);
    }
    let sampler = sampler_config.build(&schedule)?;
    let total = sampler.timesteps().len();
    let shape = [a.n, config.unet.image_channels, size, size];
    let mut chain = ReverseChain::from_noise(&unet, sampler, shape, a.seed, &chosen.device);
    // Steps after which a chain frame is taken: `chain_frames` of them, evenly spread, the last
    // one being x_0.
    let frames = a.chain_frames.max(1);
    let frame_steps: std::collections::BTreeSet<usize> =
        (1..=frames).map(|k| (k * total + frames / 2) / frames).collect();
    let per_image = size * size * config.unet.image_channels;
    let first_image = |t: burn::tensor::Tensor<4>| -> Vec<f32> {
        let data = t.narrow(0, 0, 1).into_data();
        data.as_slice::<f32>().expect("f32").to_vec()
    };
    let (mut xt_frames, mut x0_frames) = (Vec::new(), Vec::new());
    if a.chain.is_some() {
        xt_frames.extend(first_image(chain.current()));
        // x̂_0 is not defined before the first step: a black frame.
        x0_frames.extend(vec![-1.0f32; per_image]);
    }
    let bar = ProgressBar::new(total as u64);
    while let Some(step) = chain.step() {
        bar.inc(1);
        let done = step.index + 1;
        if a.chain.is_some() && frame_steps.contains(&done) {
            xt_frames.extend(first_image(step.x_prev.clone()));
            x0_frames.extend(first_image(step.pred_x0.clone()));
        }
    }
    bar.finish_and_clear();
    let x0 = chain.current().into_data();
    let pixels = x0.as_slice::<f32>().expect("f32 samples");
    eprintln!("sampled {} images with {total} {} steps on {chosen}", a.n, a.sampler);
    if let Some(path) = &a.out {
        let grid = GrayImage::grid(pixels, size, (a.n as f64).sqrt().ceil() as usize, 2);
        write_png(path, &grid).with_context(|| format!("writing '{}'", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
        for (i, img) in pixels.chunks(per_image).enumerate() {
            let path = dir.join(format!("{i:05}.png"));
            write_png(&path, &GrayImage::grid(img, size, 1, 0))
                .with_context(|| format!("writing '{}'", path.display()))?;
        }
        eprintln!("wrote {} images to {}", a.n, dir.display());
    }
    if let Some(path) = &a.chain {
        let frames = xt_frames.len() / per_image;
        let strip = GrayImage::stack_vertical(&[
            GrayImage::grid(&xt_frames, size, frames, 2),
            GrayImage::grid(&x0_frames, size, frames, 2),
        ]);
        write_png(path, &strip).with_context(|| format!("writing '{}'", path.display()))?;
        eprintln!(
            "wrote the chain (top: x_t, bottom: predicted x_0) to {}",
            path.display()
        );
    }
    Ok(())
}

/// `schedule --json` output.
#[derive(serde::Serialize)]
struct ScheduleJson {
    schedule: ScheduleKind,
    timesteps: usize,
    rows: Vec<ScheduleRow>,
}

fn run_schedule(a: ScheduleArgs) -> Result<()> {
    let schedule = NoiseSchedule::new(a.schedule, a.timesteps)?;
    let ts = if a.t.is_empty() {
        let last = a.timesteps - 1;
        let mut v: Vec<usize> = [0, 1, 10, 100, 250, 500, 750, 999]
            .into_iter()
            .filter(|&t| t < last)
            .collect();
        v.push(last);
        v
    } else {
        a.t.clone()
    };
    let rows = ts.iter().map(|&t| schedule.row(t)).collect::<Result<Vec<_>, _>>()?;
    if a.json {
        let out = ScheduleJson {
            schedule: a.schedule,
            timesteps: a.timesteps,
            rows,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{} schedule, T = {}", a.schedule, a.timesteps);
        println!(
            "{:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11}",
            "t", "beta", "alpha_bar", "sqrt_ab", "sqrt_1-ab", "beta_tilde", "coef1", "coef2", "snr"
        );
        for r in rows {
            println!(
                "{:>5} {:>11.4e} {:>11.6} {:>11.6} {:>11.6} {:>11.4e} {:>11.6} {:>11.6} {:>11.4e}",
                r.t,
                r.beta,
                r.alpha_bar,
                r.sqrt_alpha_bar,
                r.sqrt_one_minus_alpha_bar,
                r.posterior_variance,
                r.posterior_mean_coef1,
                r.posterior_mean_coef2,
                r.snr
            );
        }
    }
    Ok(())
}
