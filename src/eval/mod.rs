//! Judging a trained model: its own MNIST [`classifier`], sample-quality [`metrics`] in that
//! classifier's feature space, and (through [`crate::vlb`]) the likelihood bound.

pub mod classifier;
pub mod metrics;

use classifier::{Described, DigitClassifier};
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

/// Scores `images` (flat 28×28 pixels in [−1, 1]) against the `reference` set's description.
pub fn quality(
    name: &str,
    classifier: &DigitClassifier,
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
