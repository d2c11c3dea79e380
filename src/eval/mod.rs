//! Judging a trained model: its own MNIST [`classifier`], sample-quality [`metrics`] in that
//! classifier's feature space, and (through [`crate::diffusion::vlb`]) the likelihood bound.

pub mod classifier;
pub mod metrics;

use crate::diffusion::sampler::{EpsModel, ReverseChain, SamplerConfig, SamplerError};
use crate::diffusion::schedule::NoiseSchedule;
use crate::rng::NoiseRng;
use classifier::{Described, ImageClassifier};
use serde::Serialize;

/// The sample-quality figures of one set of images against a reference set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QualityReport {
    /// What the images are ("real digits", "DDIM-50", …).
    pub name: String,
    /// Number of images.
    pub n: usize,
    /// Fréchet distance to the reference set in the classifier's feature space.
    pub frechet_distance: f64,
    /// Share classified with confidence above 0.9.
    pub confident_share: f64,
    /// Entropy of the predicted-class histogram, bits (log₂ 10 = 3.32 at most).
    pub class_entropy_bits: f64,
    /// How many images fell in each class.
    pub class_counts: Vec<usize>,
}

/// The confidence threshold of [`QualityReport::confident_share`].
pub const CONFIDENCE_THRESHOLD: f64 = 0.9;

/// Scores `images` (flat pixels in [−1, 1], image after image, of the classifier's shape) against the
/// `reference` set's description.
pub fn quality(
    name: &str,
    classifier: &ImageClassifier,
    images: &[f32],
    reference: &Described,
    device: &burn::tensor::Device,
) -> QualityReport {
    let described = classifier.describe(images, device);
    let predictions = described.predictions();
    let classes = described.probs.first().map_or(10, Vec::len);
    let mut class_counts = vec![0; classes];
    for &p in &predictions {
        class_counts[p] += 1;
    }
    QualityReport {
        name: name.to_string(),
        n: predictions.len(),
        frechet_distance: metrics::frechet_distance_of(&described.features, &reference.features),
        confident_share: metrics::confident_share(&described.probs, CONFIDENCE_THRESHOLD),
        class_entropy_bits: metrics::class_entropy_bits(&predictions, classes),
        class_counts,
    }
}

/// How many images [`sample_images`] makes, in batches of what, of what shape, from which seed.
#[derive(Clone, Copy, Debug)]
pub struct SampleBatches {
    /// Images in all.
    pub n: usize,
    /// Images per chain.
    pub batch: usize,
    /// `[channels, height, width]` of one image.
    pub image: [usize; 3],
    /// Seed of the set: batch k runs from the stream seed (seed, k).
    pub seed: u64,
}

/// `batches.n` samples from `model` with `sampler`, as flat pixels; `on_step` is called after
/// every reverse step of every batch (for a progress bar).
pub fn sample_images<M: EpsModel>(
    model: &M,
    sampler: &SamplerConfig,
    schedule: &NoiseSchedule,
    batches: SampleBatches,
    device: &burn::tensor::Device,
    on_step: impl FnMut(),
) -> Result<Vec<f32>, SamplerError> {
    sample_images_by(|_| Ok(model), sampler, schedule, batches, device, on_step)
}

/// [`sample_images`] with a model per batch: `model_for(range)` is asked for the ε-predictor of
/// the images `range` (a guided model with those images' classes, say).
pub fn sample_images_by<M: EpsModel>(
    model_for: impl Fn(std::ops::Range<usize>) -> Result<M, SamplerError>,
    sampler: &SamplerConfig,
    schedule: &NoiseSchedule,
    batches: SampleBatches,
    device: &burn::tensor::Device,
    mut on_step: impl FnMut(),
) -> Result<Vec<f32>, SamplerError> {
    let [c, h, w] = batches.image;
    let mut images = Vec::with_capacity(batches.n * c * h * w);
    for (k, from) in (0..batches.n).step_by(batches.batch.max(1)).enumerate() {
        let count = batches.batch.min(batches.n - from);
        let chain_seed = NoiseRng::stream_seed(batches.seed, k as u64);
        let model = model_for(from..from + count)?;
        let mut chain =
            ReverseChain::from_noise(&model, sampler.build(schedule)?, [count, c, h, w], chain_seed, device);
        while chain.step().is_some() {
            on_step();
        }
        images.extend_from_slice(chain.current().into_data().as_slice::<f32>().expect("f32 samples"));
    }
    Ok(images)
}

/// Share of images whose predicted class is the one asked for (`requested[i]` for image i).
pub fn requested_class_share(predictions: &[usize], requested: &[usize]) -> f64 {
    assert_eq!(predictions.len(), requested.len());
    let hits = predictions.iter().zip(requested).filter(|(p, r)| p == r).count();
    hits as f64 / predictions.len().max(1) as f64
}

/// The memorisation check of one sample set: each sample's distance to its nearest training
/// image, against the same distance for held-out images (which the model never saw).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memorisation {
    /// The set.
    pub name: String,
    /// The 1st percentile of the held-out images' nearest-training distances.
    pub held_out_p1: f64,
    /// Median nearest-training distance of the held-out images.
    pub held_out_median: f64,
    /// Median nearest-training distance of the samples.
    pub sample_median: f64,
    /// Share of samples closer to a training image than the held-out images' 1st percentile
    /// (about 1 % for a model that does not copy; near 100 % for one that does).
    pub share_closer_than_held_out_p1: f64,
}

impl Memorisation {
    /// The check for `samples` against `train`, with `held_out_distances` (each held-out image's
    /// nearest-training distance, [`metrics::nearest_distances`]) as the yardstick.
    pub fn of(name: &str, samples: &[f32], train: &[f32], held_out_distances: &[f64], dim: usize) -> Self {
        let d = metrics::nearest_distances(samples, train, dim);
        let p1 = metrics::quantile(held_out_distances, 0.01);
        Self {
            name: name.to_string(),
            held_out_p1: p1,
            held_out_median: metrics::quantile(held_out_distances, 0.5),
            sample_median: metrics::quantile(&d, 0.5),
            share_closer_than_held_out_p1: metrics::share_below(&d, p1),
        }
    }
}

/// A figure measured several times (with other seeds, or over images): its mean and the standard
/// error of that mean, s/√n, with s the sample standard deviation (`None` from one measurement).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Measured {
    /// The mean.
    pub mean: f64,
    /// Standard error of the mean.
    pub standard_error: Option<f64>,
}

impl Measured {
    /// The mean and standard error of `values` (at least one).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let standard_error = (values.len() > 1).then(|| {
            let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
            (variance / n).sqrt()
        });
        Self { mean, standard_error }
    }

    /// "83.50 ± 1.20" (or "83.50" alone), with `decimals` places, the mean scaled by `scale`.
    pub fn show(&self, decimals: usize, scale: f64) -> String {
        match self.standard_error {
            Some(se) => format!("{:.*} ± {:.*}", decimals, self.mean * scale, decimals, se * scale),
            None => format!("{:.*}", decimals, self.mean * scale),
        }
    }
}

/// One set of images judged once per seed: each run's report and the figures over the runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SetSummary {
    /// What the images are.
    pub name: String,
    /// Images per run.
    pub n: usize,
    /// Fréchet distance to the reference set, over the runs.
    pub frechet_distance: Measured,
    /// Share with confidence above [`CONFIDENCE_THRESHOLD`], over the runs.
    pub confident_share: Measured,
    /// Class-histogram entropy in bits, over the runs.
    pub class_entropy_bits: Measured,
    /// Images per class, all runs together.
    pub class_counts: Vec<usize>,
    /// Seconds spent making the images, all runs together (0 for real digits).
    pub seconds: f64,
    /// Each run's own figures.
    pub runs: Vec<QualityReport>,
}

impl SetSummary {
    /// Summarises the runs (at least one) of one set.
    pub fn of(name: &str, runs: Vec<QualityReport>, seconds: f64) -> Self {
        let over = |f: fn(&QualityReport) -> f64| Measured::of(&runs.iter().map(f).collect::<Vec<_>>());
        let mut class_counts = vec![0; runs.first().map_or(0, |r| r.class_counts.len())];
        for run in &runs {
            for (total, c) in class_counts.iter_mut().zip(&run.class_counts) {
                *total += c;
            }
        }
        Self {
            name: name.to_string(),
            n: runs.first().map_or(0, |r| r.n),
            frechet_distance: over(|r| r.frechet_distance),
            confident_share: over(|r| r.confident_share),
            class_entropy_bits: over(|r| r.class_entropy_bits),
            class_counts,
            seconds,
            runs,
        }
    }

    /// The share of the images in the rarest and the commonest class.
    pub fn class_share_range(&self) -> (f64, f64) {
        let total = self.class_counts.iter().sum::<usize>().max(1) as f64;
        let min = self.class_counts.iter().copied().min().unwrap_or(0) as f64 / total;
        let max = self.class_counts.iter().copied().max().unwrap_or(0) as f64 / total;
        (min, max)
    }
}

/// The likelihood bound on held-out digits for one reverse-process variance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NllSummary {
    /// σ² of the reverse process: "beta" or "beta-tilde".
    pub variance: String,
    /// Held-out images the bound was averaged over.
    pub images: usize,
    /// The bound L_T + Σ L_t, bits/dim, with its standard error over the images.
    pub bits_per_dim: Measured,
    /// L_0, the discretised decoder, bits/dim.
    pub decoder_l0: f64,
    /// L_T, the prior term, bits/dim.
    pub prior_lt: f64,
    /// Every `stride`-th term was evaluated (weighted by `stride`): 1 is the full sum.
    pub stride: usize,
}

/// Everything `ddpm eval` measures, as written to `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// The weights judged.
    pub weights: String,
    /// The classifier's accuracy on the held-out digits.
    pub classifier_test_accuracy: f64,
    /// Seeds of the runs (one run per seed for every set).
    pub seeds: Vec<u64>,
    /// Held-out digits in the reference set.
    pub reference_images: usize,
    /// Real training digits first (the yardstick), then each sampler.
    pub sets: Vec<SetSummary>,
    /// The bound for each variance asked for.
    pub nll: Vec<NllSummary>,
    /// Class-conditional models: the classes asked for at each guidance scale.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guided: Vec<GuidedSummary>,
    /// The memorisation check of each sample set judged by it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub memorisation: Vec<Memorisation>,
}

/// A class-conditional model's samples at one guidance scale, each class asked for equally often.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GuidedSummary {
    /// The guidance scale w.
    pub guidance: f64,
    /// Share of samples the classifier assigns to the class asked for, over the runs.
    pub requested_class_share: Measured,
    /// The usual figures of the set.
    pub set: SetSummary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_class_share_counts_hits() {
        assert_eq!(requested_class_share(&[1, 2, 3, 3], &[1, 2, 0, 3]), 0.75);
    }

    #[test]
    fn measured_is_the_mean_and_its_standard_error() {
        // (1, 3): mean 2, s² = ((−1)² + 1²)/1 = 2, standard error √(2/2) = 1.
        let m = Measured::of(&[1.0, 3.0]);
        assert_eq!((m.mean, m.standard_error), (2.0, Some(1.0)));
        assert_eq!(m.show(1, 1.0), "2.0 ± 1.0");
        assert_eq!(Measured::of(&[0.25]).show(1, 100.0), "25.0");
        // (2, 4, 6, 8): s² = 20/3, standard error √(20/3/4) = 1.2909944.
        let se = Measured::of(&[2.0, 4.0, 6.0, 8.0]).standard_error.unwrap();
        assert!((se - 1.290_994_4).abs() < 1e-7);
    }

    #[test]
    fn a_summary_adds_up_its_runs() {
        let run = |fd, counts: Vec<usize>| QualityReport {
            name: "x".into(),
            n: counts.iter().sum(),
            frechet_distance: fd,
            confident_share: 0.5,
            class_entropy_bits: 1.0,
            class_counts: counts,
        };
        let s = SetSummary::of("x", vec![run(10.0, vec![1, 3]), run(12.0, vec![2, 2])], 5.0);
        assert_eq!(s.frechet_distance.mean, 11.0);
        assert_eq!(s.class_counts, vec![3, 5]);
        assert_eq!(s.class_share_range(), (3.0 / 8.0, 5.0 / 8.0));
    }
}
