//! `ddpm sample`: digits, per-image files, the reverse chain and the latent walk.

use anyhow::{Context, Result, bail};
use clap::Args;
use ddpm_explorer::diffusion::sampler::guidance::parse_class;
use ddpm_explorer::diffusion::sampler::{
    DEFAULT_SAMPLER_NAME, Guided, ReverseChain, SamplerConfig, SamplerSetting, VarianceKind,
};
use ddpm_explorer::diffusion::schedule::NoiseSchedule;
use ddpm_explorer::image::Picture;
use ddpm_explorer::model::weights::load_model;
use ddpm_explorer::native::device::{DeviceChoice, choose_device};
use ddpm_explorer::native::io::write_png;
use indicatif::ProgressBar;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct SampleArgs {
    /// Model folder (config.json + model.bpk) or a .bpk file with config.json beside it.
    #[arg(long, default_value = "assets")]
    weights: PathBuf,
    /// Number of images (with --class all: per class).
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// Images sampled at once; --n is drawn in batches of this size (memory grows with it).
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Class-conditional models: the class to draw, by index or name (e.g. 7, sneaker), or `all`
    /// for a row per class. Without it a conditional model draws through its "no class" label.
    #[arg(long)]
    class: Option<String>,
    /// Classifier-free guidance scale w: ε̃ = (1 + w)·ε(x, c) − w·ε(x, ∅); 0 is the conditional
    /// model itself, larger trades diversity for likeness to the class.
    #[arg(long, default_value_t = 0.0)]
    guidance: f64,
    /// The sampler: ddim (50 steps, η = 0), ddimN, ddimN-etaE, ddpm (all T steps, σ² = β̃) or
    /// ddpm-beta (σ² = β).
    #[arg(long, default_value = DEFAULT_SAMPLER_NAME)]
    sampler: SamplerConfig,
    /// DDIM: the number of steps (instead of the one in --sampler's name).
    #[arg(long)]
    steps: Option<usize>,
    /// DDIM: η in [0, 1] (0: deterministic).
    #[arg(long)]
    eta: Option<f64>,
    /// DDPM: the reverse variance, beta or beta-tilde.
    #[arg(long)]
    variance: Option<VarianceKind>,
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
    /// Enlarge the written pictures this many times (nearest neighbour), e.g. 3 for a README.
    #[arg(long, default_value_t = 1)]
    scale: usize,
    /// Latent walk: write to --out a strip of --n digits decoded (DDIM, η = 0) from x_T's spherically
    /// interpolated between --seed's and this seed's; its ends are the two seeds' own samples.
    #[arg(long, value_name = "SEED")]
    interpolate: Option<u64>,
    /// auto, cpu or wgpu.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
}

/// `sample --interpolate`: the latent walk from `--seed` to `other` as one strip.
fn write_latent_walk(
    a: &SampleArgs,
    other: u64,
    unet: &ddpm_explorer::model::UNet,
    sampler_config: &SamplerConfig,
    schedule: &NoiseSchedule,
    image: [usize; 3],
    chosen: &ddpm_explorer::native::device::ChosenDevice,
) -> Result<()> {
    use ddpm_explorer::diffusion::sampler::interpolate::interpolate_seeds;
    if !matches!(sampler_config, SamplerConfig::Ddim { eta, .. } if *eta == 0.0) {
        bail!("--interpolate decodes with deterministic DDIM: use --sampler ddimN (η = 0)");
    }
    let Some(path) = &a.out else {
        bail!("--interpolate writes a strip: pass --out FILE.png");
    };
    if a.n < 2 {
        bail!("--interpolate needs --n of at least 2 (the two ends)");
    }
    let [channels, size, _] = image;
    let strip = interpolate_seeds(
        unet,
        sampler_config.build(schedule)?,
        image,
        (a.seed, other),
        a.n,
        &chosen.device,
    ); // [n, c, s, s]
    let data = strip.into_data();
    let image = Picture::grid_channels(data.as_slice::<f32>().expect("f32 samples"), channels, size, a.n, 2);
    write_png(path, &image.scaled(a.scale)).with_context(|| format!("writing '{}'", path.display()))?;
    eprintln!(
        "wrote the latent walk from seed {} to seed {other} ({} images) to {}",
        a.seed,
        a.n,
        path.display()
    );
    Ok(())
}

/// The most images one `sample` may write (a bound on time and disk, not memory: batches keep
/// memory flat).
const MAX_IMAGES: usize = 1_000_000;
/// The largest batch (the U-Net's activations for 1,024 digits take about 1.5 GB).
const MAX_BATCH: usize = 1024;

/// Each image's class: `--class` against the model's class names (`None`: no class).
fn requested_classes(a: &SampleArgs, names: &[String]) -> Result<(Vec<Option<usize>>, usize)> {
    match a.class.as_deref() {
        None => Ok((vec![None; a.n], (a.n as f64).sqrt().ceil() as usize)),
        Some(_) if names.is_empty() => bail!("--class: this model is unconditional (trained without classes)"),
        Some("all") => Ok((
            (0..names.len())
                .flat_map(|c| std::iter::repeat_n(Some(c), a.n))
                .collect(),
            a.n,
        )),
        Some(text) => {
            let c = parse_class(text, names)?;
            Ok((vec![Some(c); a.n], (a.n as f64).sqrt().ceil() as usize))
        }
    }
}

pub(crate) fn run(a: SampleArgs) -> Result<()> {
    if a.n == 0 {
        bail!("--n must be at least 1");
    }
    if a.n > MAX_IMAGES {
        bail!("--n is {}, above the bound of {MAX_IMAGES} images", a.n);
    }
    if a.batch == 0 || a.batch > MAX_BATCH {
        bail!("--batch must be in 1..={MAX_BATCH} (got {})", a.batch);
    }
    if a.out.is_none() && a.out_dir.is_none() && a.chain.is_none() {
        bail!("nothing to write: pass --out FILE.png, --out-dir DIR or --chain FILE.png");
    }
    let chosen = choose_device(a.device)?;
    let (config, unet) = load_model(&a.weights, &chosen.device)
        .with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    let schedule = config.noise_schedule()?;
    let settings = [
        a.steps.map(SamplerSetting::Steps),
        a.eta.map(SamplerSetting::Eta),
        a.variance.map(SamplerSetting::Variance),
    ];
    let mut sampler_config = settings
        .into_iter()
        .flatten()
        .try_fold(a.sampler, SamplerConfig::with_setting)
        .with_context(|| format!("--sampler {}", a.sampler.name()))?;
    if a.no_clip {
        sampler_config = sampler_config.without_clipping();
    }
    let size = config.unet.image_size;
    let channels = config.unet.image_channels;
    if let Some(other) = a.interpolate {
        let image = [config.unet.image_channels, size, size];
        return write_latent_walk(&a, other, &unet, &sampler_config, &schedule, image, &chosen);
    }
    let (classes, columns) = requested_classes(&a, &config.class_names())?;
    Guided::new(&unet, classes.clone(), a.guidance)?;
    let sampler = sampler_config.build(&schedule)?;
    let total = sampler.timesteps().len();
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
    let batches = classes.len().div_ceil(a.batch);
    let bar = ProgressBar::new((total * batches) as u64);
    let mut all_pixels = Vec::with_capacity(classes.len() * per_image);
    for (b, batch_classes) in classes.chunks(a.batch).enumerate() {
        // The first batch keeps --seed's own noise (so `--n` ≤ `--batch` is one chain, as always);
        // the others take streams of it.
        let seed = if b == 0 {
            a.seed
        } else {
            ddpm_explorer::rng::NoiseRng::stream_seed(a.seed, b as u64)
        };
        let guided = Guided::new(&unet, batch_classes.to_vec(), a.guidance)?;
        let shape = [batch_classes.len(), config.unet.image_channels, size, size];
        let mut chain = ReverseChain::from_noise(&guided, sampler.clone(), shape, seed, &chosen.device);
        if b == 0 && a.chain.is_some() {
            xt_frames.extend(first_image(chain.current()));
            // x̂_0 is not defined before the first step: a black frame.
            x0_frames.extend(vec![-1.0f32; per_image]);
        }
        while let Some(step) = chain.step() {
            bar.inc(1);
            let done = step.index + 1;
            if b == 0 && a.chain.is_some() && frame_steps.contains(&done) {
                xt_frames.extend(first_image(step.x_prev.clone()));
                x0_frames.extend(first_image(step.pred_x0.clone()));
            }
        }
        all_pixels.extend_from_slice(chain.current().into_data().as_slice::<f32>().expect("f32 samples"));
    }
    bar.finish_and_clear();
    let pixels = &all_pixels[..];
    eprintln!(
        "sampled {} images with {total} steps of {sampler_config} on {chosen}",
        classes.len()
    );
    if let Some(path) = &a.out {
        let grid = Picture::grid_channels(pixels, channels, size, columns, 2);
        write_png(path, &grid.scaled(a.scale)).with_context(|| format!("writing '{}'", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
        for (i, img) in pixels.chunks(per_image).enumerate() {
            let path = dir.join(format!("{i:05}.png"));
            write_png(&path, &Picture::grid_channels(img, channels, size, 1, 0))
                .with_context(|| format!("writing '{}'", path.display()))?;
        }
        eprintln!("wrote {} images to {}", classes.len(), dir.display());
    }
    if let Some(path) = &a.chain {
        let frames = xt_frames.len() / per_image;
        let strip = Picture::stack_vertical(&[
            Picture::grid_channels(&xt_frames, channels, size, frames, 2),
            Picture::grid_channels(&x0_frames, channels, size, frames, 2),
        ]);
        write_png(path, &strip.scaled(a.scale)).with_context(|| format!("writing '{}'", path.display()))?;
        eprintln!(
            "wrote the chain (top: x_t, bottom: predicted x_0) to {}",
            path.display()
        );
    }
    Ok(())
}
