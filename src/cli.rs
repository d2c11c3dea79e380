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
use ddpm_explorer::train::{TrainConfig, train};
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
    /// Images per sample set (and real digits in the yardstick).
    #[arg(long, default_value_t = 256)]
    n: usize,
    /// Sample sets to judge: ddimN (DDIM with N steps, η = 0) or ddpm (all T steps, σ² = β̃).
    #[arg(long, value_delimiter = ',', default_value = "ddim50,ddpm")]
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
    /// Seed of the samples and of the bound's noise.
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

#[derive(Args, Debug)]
struct TrainArgs {
    /// Dataset: a folder of IDX files (train-images-idx3-ubyte[.gz] …) or an IDX image file.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Total optimisation steps.
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<usize>,
    /// Total passes over the dataset (instead of --steps).
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak Adam learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Linear learning-rate warm-up steps.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// EMA decay of the exported weights.
    #[arg(long, default_value_t = 0.999)]
    ema: f64,
    /// Noise schedule: linear or cosine.
    #[arg(long, default_value = "linear")]
    schedule: ScheduleKind,
    /// Diffusion steps T.
    #[arg(long, default_value_t = 1000)]
    timesteps: usize,
    /// Seed of data order, timesteps and noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (checkpoint/, export/, samples/, loss.csv).
    #[arg(long, default_value = "runs/mnist")]
    out: PathBuf,
    /// Continue from the latest checkpoint in --out.
    #[arg(long)]
    resume: bool,
    /// auto (a GPU if there is one, else CPU), cpu or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    /// Write a 4×4 sample grid every N steps (0: never).
    #[arg(long, default_value_t = 1000)]
    sample_every: usize,
    /// Write a checkpoint (and export the EMA model) every N steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Log the loss every N steps.
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    /// U-Net channels at full resolution.
    #[arg(long, default_value_t = 32)]
    channels: usize,
    /// Channel multipliers per resolution level, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,2")]
    channel_mult: Vec<usize>,
    /// Residual blocks per level.
    #[arg(long, default_value_t = 2)]
    res_blocks: usize,
    /// Dropout in residual blocks.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
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
    if name == "ddpm" {
        return Ok((
            "DDPM (all steps, σ² = β̃)".into(),
            SamplerConfig::Ddpm {
                variance: VarianceKind::BetaTilde,
                clip_x0: true,
            },
        ));
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
        _ => bail!("unknown sample set '{name}': expected ddpm or ddimN (e.g. ddim50)"),
    }
}

fn run_eval(a: EvalArgs) -> Result<()> {
    use ddpm_explorer::eval::classifier::{dataset_pixels, load_classifier};
    use ddpm_explorer::eval::{QualityReport, quality};
    use ddpm_explorer::rng::NoiseRng;
    use ddpm_explorer::vlb::estimate_bits_per_dim;
    if a.n < 2 {
        bail!("--n must be at least 2 (a covariance needs two images)");
    }
    if a.batch == 0 {
        bail!("--batch must be at least 1");
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
    eprintln!(
        "classifier: {:.2} % on {} held-out digits; reference set: the {} held-out digits",
        record.test_accuracy * 100.0,
        record.test_images,
        test.len()
    );
    let reference = classifier.describe(&dataset_pixels(&test, 0..test.len()), &device);

    let mut reports: Vec<(QualityReport, f64)> = Vec::new();
    // The yardstick: real training digits, as many as the sample sets have.
    let mut rng = NoiseRng::new(a.seed);
    let mut pool: Vec<usize> = (0..train.len()).collect();
    for i in 0..a.n.min(pool.len()) {
        let j = i + rng.below(pool.len() - i);
        pool.swap(i, j);
    }
    let real = dataset_pixels(&train, pool.into_iter().take(a.n));
    reports.push((
        quality("real digits (training split)", &classifier, &real, &reference, &device),
        0.0,
    ));

    for (label, sampler_config) in &sets {
        let sampler = sampler_config.build(&schedule)?;
        let steps = sampler.timesteps().len();
        let bar = ProgressBar::new((a.n.div_ceil(a.batch) * steps) as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]",
        )?);
        bar.set_message(label.clone());
        let started = std::time::Instant::now();
        let mut images = Vec::with_capacity(a.n * size * size);
        for (k, from) in (0..a.n).step_by(a.batch).enumerate() {
            let count = a.batch.min(a.n - from);
            let sampler = sampler_config.build(&schedule)?;
            let seed = a.seed.wrapping_add(1 + k as u64);
            let mut chain = ReverseChain::from_noise(&unet, sampler, [count, 1, size, size], seed, &device);
            while chain.step().is_some() {
                bar.inc(1);
            }
            images.extend_from_slice(chain.current().into_data().as_slice::<f32>().expect("f32 samples"));
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        reports.push((quality(label, &classifier, &images, &reference, &device), seconds));
    }

    println!(
        "sample quality ({} images per set; reference: {} held-out digits):",
        a.n,
        test.len()
    );
    println!(
        "{:<30} {:>10} {:>12} {:>14} {:>10}  images per class 0…9",
        "set", "Fréchet", "conf > 0.9", "class entropy", "seconds"
    );
    for (r, seconds) in &reports {
        println!(
            "{:<30} {:>10.2} {:>11.1} % {:>9.3} bits {:>10.0}  {:?}",
            r.name,
            r.frechet_distance,
            r.confident_share * 100.0,
            r.class_entropy_bits,
            seconds,
            r.class_counts
        );
    }

    let mut bits_per_dim = None;
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
        let estimate = estimate_bits_per_dim(
            &unet,
            &schedule,
            VarianceKind::BetaTilde,
            x0,
            a.seed,
            a.bpd_stride,
            |done| bar.set_position(done as u64),
        );
        bar.finish_and_clear();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let totals = estimate.total();
        let sd =
            (totals.iter().map(|x| (x - mean(&totals)).powi(2)).sum::<f64>() / (totals.len().max(2) - 1) as f64).sqrt();
        let stderr = sd / (totals.len() as f64).sqrt();
        println!(
            "NLL bound on {count} held-out digits: {:.3} ± {:.3} bits/dim (L_0 {:.3}, L_1…L_(T-1) {:.3}, L_T {:.5}; σ² = β̃; every {} of {} terms; {:.0} s)",
            mean(&totals),
            stderr,
            mean(&estimate.decoder),
            mean(&estimate.terms) - mean(&estimate.decoder),
            mean(&estimate.prior),
            if a.bpd_stride <= 1 {
                "one".to_string()
            } else {
                format!("{}th", a.bpd_stride)
            },
            schedule.timesteps(),
            started.elapsed().as_secs_f64()
        );
        bits_per_dim = Some(serde_json::json!({
            "images": count,
            "bits_per_dim": mean(&totals),
            "standard_error": stderr,
            "decoder_l0": mean(&estimate.decoder),
            "prior_lT": mean(&estimate.prior),
            "stride": a.bpd_stride.max(1),
        }));
    }
    if let Some(path) = &a.json {
        let json = serde_json::json!({
            "weights": a.weights.display().to_string(),
            "classifier_test_accuracy": record.test_accuracy,
            "n": a.n,
            "seed": a.seed,
            "sets": reports.iter().map(|(r, s)| serde_json::json!({"report": r, "seconds": s})).collect::<Vec<_>>(),
            "nll": bits_per_dim,
        });
        ddpm_explorer::io::write_atomic(path, serde_json::to_string_pretty(&json)?.as_bytes())
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
    let steps = match (a.steps, a.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => (e * data.len()).div_ceil(a.batch.max(1)),
        (None, None) => 20_000,
    };
    let unet = UNetConfig::new()
        .with_base_channels(a.channels)
        .with_channel_mult(a.channel_mult.clone())
        .with_res_blocks(a.res_blocks)
        .with_dropout(a.dropout);
    let config = TrainConfig {
        unet,
        schedule: a.schedule,
        timesteps: a.timesteps,
        steps,
        batch: a.batch,
        lr: a.lr,
        warmup: a.warmup,
        ema_decay: a.ema,
        seed: a.seed,
        sample_every: a.sample_every,
        checkpoint_every: a.checkpoint_every,
        log_every: a.log_every,
    };
    config.validate()?;
    let chosen = choose_device(a.device).map_err(anyhow::Error::msg)?;
    eprintln!(
        "training on {} images ({}×{}) on {chosen}: {steps} steps of batch {}, {} parameters",
        data.len(),
        data.rows,
        data.cols,
        a.batch,
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
    let sampler = sampler_config.build(&schedule)?;
    let total = sampler.timesteps().len();
    let size = config.unet.image_size;
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
