//! `ddpm eval`: sample quality in the classifier's eyes, with the real-digit yardstick, and the bound.

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use ddpm_explorer::data::{ImageSource, TrainingImages};
use ddpm_explorer::diffusion::sampler::{DEFAULT_SAMPLER_NAME, EpsModel, SamplerConfig, SamplerError, VarianceKind};
use ddpm_explorer::diffusion::schedule::NoiseSchedule;
use ddpm_explorer::eval::classifier::{Described, ImageClassifier};
use ddpm_explorer::eval::{
    Memorisation, QualityReport, SampleBatches, quality, requested_class_share, sample_images_by,
};
use ddpm_explorer::model::weights::load_model;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args, Debug)]
#[command(
    after_help = "Cost on a CPU (2 cores, the shipped 1.20 M U-Net): DDIM-50 makes 1,000 digits in about 2 minutes, \
DDPM-1000 takes 20 times as long; the full bound (all 1,000 terms) costs over 10 s per held-out digit \
(--bpd-stride k divides that by k)."
)]
pub(crate) struct EvalArgs {
    /// Model folder (config.json + model.bpk).
    #[arg(long, default_value = "assets")]
    weights: PathBuf,
    /// Classifier folder (classifier.json + classifier.bpk), made by `ddpm classifier`.
    #[arg(long, default_value = "training/classifier")]
    classifier: PathBuf,
    /// The model's training images (IDX files, or an image folder): the yardstick is drawn from
    /// them, and the memorisation check measures each sample's distance to the nearest of them.
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Held-out images, the reference set [default: the IDX files' t10k-* split]: an image folder
    /// (with the same class subfolders, for a class-conditional model) when --data is one.
    #[arg(long)]
    held_out: Option<PathBuf>,
    /// Image folders: keep the decoded images in memory up to this many MiB; a larger set is read
    /// from its files when needed.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    data_memory: usize,
    /// Images per sample set and run (and real images in the yardstick). Fewer than the classifier's
    /// 128 features leave the covariance rank-deficient: the Fréchet distance then mostly measures N.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Runs per set, each with its own seed (seed, seed + 1, …): the figures are printed as the mean
    /// ± its standard error over the runs.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Sample sets to judge, each a sampler: ddimN (DDIM with N steps; ddimN-etaE for η = E),
    /// ddpm (all T steps, σ² = β̃) or ddpm-beta (σ² = β).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SAMPLER_NAME)]
    samplers: Vec<SamplerConfig>,
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
    /// Class-conditional models: the guidance scales w at which samples of every class (asked for
    /// equally often) are judged, with the first sample set's sampler; `none` judges the samples
    /// without a class (∅) alone.
    #[arg(long, default_value = "0,1,3", value_name = "W,W,…|none")]
    guidance: GuidanceScales,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// How the JSON names the weights, e.g. "step 112,000 (EMA, f16)" [default: the --weights path].
    #[arg(long, requires = "json")]
    label: Option<String>,
}

/// `--guidance`: the scales w to judge a conditional model's classes at, or none of them.
#[derive(Clone, Debug, PartialEq)]
struct GuidanceScales(Vec<f64>);

impl std::str::FromStr for GuidanceScales {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "none" {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|w| {
                w.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{w}` is not a guidance scale (e.g. 0,1,3, or none)"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// What every sample set is judged against, and how it is drawn.
struct Judge<'a> {
    classifier: &'a ImageClassifier,
    reference: &'a Described,
    device: &'a Device,
    train_pixels: &'a [f32],
    held_out_distances: &'a [f64],
    seeds: &'a [u64],
    n: usize,
    batch: usize,
    /// The images, `[channels, height, width]`.
    shape: [usize; 3],
}

/// One set judged once per seed.
struct Judged {
    runs: Vec<QualityReport>,
    /// With classes asked for: each run's share of samples classified as the class asked for.
    requested_shares: Vec<f64>,
    /// The first run's memorisation check.
    memorisation: Memorisation,
}

impl Judge<'_> {
    /// Draws `self.n` images per seed with `sampler` (the ε-predictor of images `range` is
    /// `model_for(range)`), and judges each run; `requested[i]` is the class image i was asked to be.
    fn set<M: EpsModel>(
        &self,
        name: &str,
        sampler: &SamplerConfig,
        schedule: &NoiseSchedule,
        model_for: impl Fn(std::ops::Range<usize>) -> Result<M, SamplerError>,
        requested: Option<&[usize]>,
    ) -> Result<Judged> {
        let steps = sampler.build(schedule)?.timesteps().len();
        let bar = ProgressBar::new((self.seeds.len() * self.n.div_ceil(self.batch) * steps) as u64);
        bar.set_style(ProgressStyle::with_template(
            "{msg} {bar:40} {pos}/{len} steps [{elapsed_precise} < {eta_precise}]",
        )?);
        bar.set_message(name.to_string());
        let (mut runs, mut requested_shares, mut memorisation) = (Vec::new(), Vec::new(), None);
        for &seed in self.seeds {
            let batches = SampleBatches {
                n: self.n,
                batch: self.batch,
                image: self.shape,
                seed,
            };
            let images = sample_images_by(&model_for, sampler, schedule, batches, self.device, || bar.inc(1))?;
            if let Some(requested) = requested {
                let predictions = self.classifier.describe(&images, self.device).predictions();
                requested_shares.push(requested_class_share(&predictions, requested));
            }
            runs.push(quality(name, self.classifier, &images, self.reference, self.device));
            let dim = self.shape.iter().product();
            memorisation.get_or_insert_with(|| {
                Memorisation::of(name, &images, self.train_pixels, self.held_out_distances, dim)
            });
        }
        bar.finish_and_clear();
        Ok(Judged {
            runs,
            requested_shares,
            memorisation: memorisation.expect("at least one run"),
        })
    }
}

pub(crate) fn run(a: EvalArgs) -> Result<()> {
    use ddpm_explorer::diffusion::sampler::Guided;
    use ddpm_explorer::diffusion::vlb::estimate_bits_per_dim_for;
    use ddpm_explorer::eval::classifier::load_classifier;
    use ddpm_explorer::eval::metrics::nearest_distances;
    use ddpm_explorer::eval::{EvalReport, GuidedSummary, Measured, NllSummary, SetSummary};
    use ddpm_explorer::rng::NoiseRng;
    if a.n < 2 {
        bail!("--n must be at least 2 (a covariance needs two images)");
    }
    if a.batch == 0 || a.runs == 0 {
        bail!("--batch and --runs must be at least 1");
    }
    let sets: Vec<(String, SamplerConfig)> = a.samplers.iter().map(|s| (s.to_string(), *s)).collect();
    let device = burn::tensor::Device::flex();
    let (config, unet) =
        load_model(&a.weights, &device).with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    let (record, classifier) = load_classifier(&a.classifier, &device).with_context(|| {
        format!(
            "loading the classifier (make one with `ddpm classifier --out {}`)",
            a.classifier.display()
        )
    })?;
    let schedule = config.noise_schedule()?;
    let size = config.unet.image_size;
    let shape = [config.unet.image_channels, size, size];
    if classifier.shape() != shape {
        bail!(
            "the classifier in '{}' judges images of {:?} (channels, height, width) but these weights make {shape:?}: \
             train one on the model's data with `ddpm classifier --data … --image-size {size} --out …`",
            a.classifier.display(),
            classifier.shape()
        );
    }
    if let Some(classes) = unet.num_classes()
        && classes != classifier.class_count()
    {
        bail!(
            "the model has {classes} classes but the classifier tells {} apart: judge it with a classifier of its data",
            classifier.class_count()
        );
    }
    let (train, test) = TrainingImages::open_with_held_out(&a.data, a.held_out.as_deref(), size, a.data_memory << 20)
        .context("loading the training and held-out images")?;
    let (train, test) = (train.source(), test.source());
    if let Some(other) = [train.shape(), test.shape()].into_iter().find(|s| *s != shape) {
        bail!("the images are {other:?} but the weights make {shape:?} (channels, height, width)");
    }
    let read_all = |images: &dyn ImageSource| images.read(&(0..images.len()).collect::<Vec<_>>());
    let test_pixels = read_all(test).context("reading the held-out images")?;
    let train_pixels = read_all(train).context("reading the training images")?;
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
            "--n {} is more than the {} training images of the yardstick",
            a.n,
            train.len()
        );
    }
    eprintln!(
        "classifier: {:.2} % on {} held-out images; reference set: the {} held-out images",
        record.test_accuracy * 100.0,
        record.test_images,
        test.len()
    );
    let reference = classifier.describe(&test_pixels, &device);
    let seeds: Vec<u64> = (0..a.runs as u64).map(|k| a.seed.wrapping_add(k)).collect();

    // The yardstick: real training images, as many as each sample set has, a fresh draw per run.
    let real_runs = seeds
        .iter()
        .map(|&seed| {
            let mut indices: Vec<usize> = (0..train.len()).collect();
            NoiseRng::new(seed).shuffle(&mut indices);
            let per_image: usize = shape.iter().product();
            let real: Vec<f32> = indices
                .into_iter()
                .take(a.n)
                .flat_map(|i| train_pixels[i * per_image..(i + 1) * per_image].iter().copied())
                .collect();
            quality("real images (training split)", &classifier, &real, &reference, &device)
        })
        .collect();
    let mut summaries = vec![SetSummary::of("real images (training split)", real_runs, 0.0)];
    // The memorisation check's yardstick: how far each held-out image lies from its nearest
    // training image.
    let dim = shape.iter().product();
    let held_out_distances = nearest_distances(&test_pixels, &train_pixels, dim);
    let mut memorisation = Vec::new();

    let judge = Judge {
        classifier: &classifier,
        reference: &reference,
        device: &device,
        train_pixels: &train_pixels,
        held_out_distances: &held_out_distances,
        seeds: &seeds,
        n: a.n,
        batch: a.batch,
        shape,
    };
    for (label, sampler_config) in &sets {
        let started = std::time::Instant::now();
        let judged = judge.set(label, sampler_config, &schedule, |_| Ok(&unet), None)?;
        memorisation.push(judged.memorisation);
        summaries.push(SetSummary::of(label, judged.runs, started.elapsed().as_secs_f64()));
    }

    // Conditional models: every class asked for equally often, at each guidance scale.
    let mut guided = Vec::new();
    if let (Some(classes), Some((label, sampler_config))) = (unet.num_classes(), sets.first()) {
        let requested: Vec<usize> = (0..a.n).map(|i| i % classes).collect();
        for &w in &a.guidance.0 {
            let name = format!("{label}, each class, w = {w}");
            let started = std::time::Instant::now();
            let model_for = |range: std::ops::Range<usize>| {
                Guided::new(&unet, requested[range].iter().map(|&c| Some(c)).collect(), w)
            };
            let judged = judge.set(&name, sampler_config, &schedule, model_for, Some(&requested))?;
            memorisation.push(judged.memorisation);
            guided.push(GuidedSummary {
                guidance: w,
                requested_class_share: Measured::of(&judged.requested_shares),
                set: SetSummary::of(&name, judged.runs, started.elapsed().as_secs_f64()),
            });
        }
    }

    println!(
        "sample quality ({} images per set and run, {} run(s), mean ± standard error over the runs; reference: {} held-out images):",
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

    if !guided.is_empty() {
        println!(
            "class-conditional samples (each class asked for about {} times per run):",
            a.n / unet.num_classes().unwrap_or(1)
        );
        println!(
            "{:<40} {:>18} {:>16} {:>16} {:>8}",
            "set", "requested class (%)", "Fréchet", "conf > 0.9 (%)", "seconds"
        );
        for g in &guided {
            println!(
                "{:<40} {:>18} {:>16} {:>16} {:>8.0}",
                g.set.name,
                g.requested_class_share.show(1, 100.0),
                g.set.frechet_distance.show(2, 1.0),
                g.set.confident_share.show(1, 100.0),
                g.set.seconds
            );
        }
    }
    println!(
        "memorisation (nearest training image, pixel distance; held-out images: median {:.2}, 1st percentile {:.2}):",
        ddpm_explorer::eval::metrics::quantile(&held_out_distances, 0.5),
        ddpm_explorer::eval::metrics::quantile(&held_out_distances, 0.01)
    );
    for m in &memorisation {
        println!(
            "  {:<40} median {:.2}, closer than held-out's 1st percentile: {:.1} %",
            m.name,
            m.sample_median,
            m.share_closer_than_held_out_p1 * 100.0
        );
    }

    let mut nll = Vec::new();
    if a.bpd_images > 0 {
        let count = a.bpd_images.min(test.len());
        let [c, h, w] = shape;
        let x0 = burn::tensor::Tensor::<4>::from_data(
            burn::tensor::TensorData::new(test_pixels[..count * dim].to_vec(), [count, c, h, w]),
            &device,
        ); // [count, c, h, w]
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
                "NLL bound on {count} held-out images, σ² = {}: {} bits/dim (± standard error over the images; \
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
            weights: a.label.clone().unwrap_or_else(|| a.weights.display().to_string()),
            classifier_test_accuracy: record.test_accuracy,
            seeds,
            reference_images: test.len(),
            sets: summaries,
            nll,
            guided,
            memorisation,
        };
        ddpm_explorer::native::io::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing '{}'", path.display()))?;
    }
    Ok(())
}
