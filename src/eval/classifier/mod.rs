//! The project's own image classifier: the judge of sample quality, one trained per dataset
//! (MNIST, Fashion-MNIST, a labelled image folder).
//!
//! A small CNN (three 3×3 convolutions with max-pooling, a 128-unit hidden layer, a logit per
//! class) for images of any channels and any size from 8 pixels. Its
//! hidden layer is the feature space of the Fréchet distance in [`super::metrics`], the way FID uses
//! Inception's pool features; its softmax gives the confidence and class histogram of samples.

use crate::model::weights::WeightsError;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// What can go wrong loading or training the classifier.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    /// A file could not be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// `classifier.json` is not a classifier record.
    #[error("{path}: {reason}")]
    Record {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The weights do not fit the network.
    #[error("{path}: {source}")]
    Weights {
        /// The file.
        path: String,
        /// What is wrong.
        source: WeightsError,
    },
    /// Bad data or settings.
    #[error("{0}")]
    Settings(String),
}

/// File name of the classifier's weights inside its folder.
pub const CLASSIFIER_WEIGHTS_FILE: &str = "classifier.bpk";
/// File name of the classifier's configuration inside its folder.
pub const CLASSIFIER_CONFIG_FILE: &str = "classifier.json";

/// Configuration of [`ImageClassifier`].
#[derive(Config, Debug, PartialEq)]
pub struct ImageClassifierConfig {
    /// Channels of the three convolutions.
    #[config(default = "[16, 32, 64]")]
    pub channels: [usize; 3],
    /// Size of the hidden (feature) layer.
    #[config(default = 128)]
    pub features: usize,
    /// Number of classes.
    #[config(default = 10)]
    pub classes: usize,
    /// Dropout before the last layer (training only).
    #[config(default = 0.3)]
    pub dropout: f64,
    /// The images it reads, `[channels, height, width]` (square); absent: 1 × 28 × 28, as every
    /// classifier made before colour was.
    pub image_shape: Option<[usize; 3]>,
}

/// The images of MNIST: what a classifier without an `image_shape` reads.
pub const MNIST_SHAPE: [usize; 3] = [1, 28, 28];

impl ImageClassifierConfig {
    /// The images it reads, `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        self.image_shape.unwrap_or(MNIST_SHAPE)
    }

    /// Builds the network with freshly initialised weights.
    pub fn init(&self, device: &Device) -> ImageClassifier {
        let [c1, c2, c3] = self.channels;
        let [channels, size, _] = self.shape();
        // Three 2 × 2 poolings, each rounding down: 28 → 14 → 7 → 3.
        let side = size / 8;
        let conv = |c_in: usize, c_out: usize| {
            Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        ImageClassifier {
            conv1: conv(channels, c1),
            conv2: conv(c1, c2),
            conv3: conv(c2, c3),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: LinearConfig::new(c3 * side * side, self.features).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            logits: LinearConfig::new(self.features, self.classes).init(device),
            channels,
            size,
        }
    }

    /// Builds the network and loads burnpack `bytes` into it (shape-checked).
    pub fn load(&self, bytes: Vec<u8>, device: &Device) -> Result<ImageClassifier, WeightsError> {
        crate::model::weights::load_weights(self.init(device), bytes)
    }
}

/// conv → ReLU → pool (28 → 14) → conv → ReLU → pool (→ 7) → conv → ReLU → pool (→ 3) →
/// linear → ReLU (the features) → dropout → linear (the logits).
#[derive(Module, Debug)]
pub struct ImageClassifier {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    pool: MaxPool2d,
    hidden: Linear,
    dropout: Dropout,
    logits: Linear,
    /// Channels of the images it reads.
    channels: usize,
    /// Their height and width.
    size: usize,
}

impl ImageClassifier {
    /// Dimensions of the feature space ([`Self::features`]).
    pub fn feature_count(&self) -> usize {
        self.hidden.weight.dims()[1]
    }

    /// The images it reads, `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.size, self.size]
    }

    /// The number of classes.
    pub fn class_count(&self) -> usize {
        self.logits.weight.dims()[1]
    }

    /// The hidden-layer activations: the feature space of the Fréchet distance.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, size, size]`, pixels in [−1, 1] (MNIST: size 28)
    /// - returns `[batch, features]`
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(x))); // [b, c1, size/2, size/2]: 14
        let x = self.pool.forward(relu(self.conv2.forward(x))); // [b, c2, size/4, size/4]: 7
        let x = self.pool.forward(relu(self.conv3.forward(x))); // [b, c3, size/8, size/8]: 3
        let x = x.flatten::<2>(1, 3); // [b, c3 · (size/8)²]
        relu(self.hidden.forward(x)) // [b, features]
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, size, size]`
    /// - returns `[batch, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.features(x); // [b, features]
        self.logits.forward(self.dropout.forward(h)) // [b, classes]
    }

    /// Features and class probabilities of `images` (flat `[n · channels · size · size]` pixels
    /// in [−1, 1], planar image after image), computed in batches and read back to the host.
    pub fn describe(&self, images: &[f32], device: &Device) -> Described {
        const BATCH: usize = 250;
        let [c, h, w] = self.shape();
        let per_image = c * h * w;
        let mut out = Described::default();
        for chunk in images.chunks(BATCH * per_image) {
            let n = chunk.len() / per_image;
            let x = Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [n, c, h, w]), device); // [n, c, h, w]
            let h = self.features(x); // [n, features]
            let probs = softmax(self.logits.forward(h.clone()), 1); // [n, classes]
            out.features.extend(host_rows(h));
            out.probs.extend(host_rows(probs));
        }
        out
    }
}

fn host_rows(t: Tensor<2>) -> Vec<Vec<f64>> {
    let [rows, cols] = t.dims();
    let data = t.into_data();
    let flat = data.as_slice::<f32>().expect("f32 activations");
    (0..rows)
        .map(|r| flat[r * cols..(r + 1) * cols].iter().map(|&v| v as f64).collect())
        .collect()
}

/// What the classifier says about a set of images: one row per image.
#[derive(Clone, Debug, Default)]
pub struct Described {
    /// Hidden-layer features.
    pub features: Vec<Vec<f64>>,
    /// Softmax class probabilities.
    pub probs: Vec<Vec<f64>>,
}

impl Described {
    /// The most probable class of each image.
    pub fn predictions(&self) -> Vec<usize> {
        self.probs.iter().map(|p| super::metrics::argmax(p)).collect()
    }
}

/// How the classifier was trained and how well it did: `classifier.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierRecord {
    /// The architecture.
    pub config: ImageClassifierConfig,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per step.
    pub batch: usize,
    /// Peak Adam learning rate (cosine decay to 0).
    pub lr: f64,
    /// Seed of order and augmentation.
    pub seed: u64,
    /// Largest random shift (pixels) of the augmentation.
    pub max_shift: usize,
    /// Accuracy on the held-out split after training.
    pub test_accuracy: f64,
    /// Size of the held-out split.
    pub test_images: usize,
}

#[cfg(feature = "native")]
pub use train::{load_classifier, train_classifier};

#[cfg(feature = "native")]
mod train;
