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
pub use native::{load_classifier, train_classifier};

#[cfg(feature = "native")]
mod native {
    use super::*;
    use crate::data::{BatchSampler, ImageSource};
    use crate::native::io::write_atomic;
    use crate::rng::NoiseRng;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::{AdamConfig, GradientsParams};
    use burn::tensor::Int;
    use std::path::Path;

    /// Loads `classifier.json` + `classifier.bpk` from a folder.
    pub fn load_classifier(
        dir: &Path,
        device: &Device,
    ) -> Result<(ClassifierRecord, ImageClassifier), ClassifierError> {
        let config_path = dir.join(CLASSIFIER_CONFIG_FILE);
        let path = config_path.display().to_string();
        let json = std::fs::read_to_string(&config_path).map_err(|error| ClassifierError::Io {
            path: path.clone(),
            error,
        })?;
        let record: ClassifierRecord = serde_json::from_str(&json).map_err(|e| ClassifierError::Record {
            path,
            reason: e.to_string(),
        })?;
        let weights_path = dir.join(CLASSIFIER_WEIGHTS_FILE);
        let path = weights_path.display().to_string();
        let bytes = std::fs::read(&weights_path).map_err(|error| ClassifierError::Io {
            path: path.clone(),
            error,
        })?;
        let model = record
            .config
            .load(bytes, device)
            .map_err(|source| ClassifierError::Weights { path, source })?;
        Ok((record, model))
    }

    /// A copy of a `[channels, size, size]` image (planar, pixels in [−1, 1]) moved by (dx, dy)
    /// pixels, black (−1) filling in.
    fn shifted(image: &[f32], [channels, size, _]: [usize; 3], dx: isize, dy: isize) -> Vec<f32> {
        let side = size as isize;
        let mut out = vec![-1.0f32; image.len()];
        for c in 0..channels {
            let plane = c * size * size;
            for y in 0..side {
                for x in 0..side {
                    let (sx, sy) = (x - dx, y - dy);
                    if (0..side).contains(&sx) && (0..side).contains(&sy) {
                        out[plane + (y * side + x) as usize] = image[plane + (sy * side + sx) as usize];
                    }
                }
            }
        }
        out
    }

    /// Share of `data` that `model` classifies correctly.
    pub fn accuracy(model: &ImageClassifier, data: &dyn ImageSource, device: &Device) -> Result<f64, ClassifierError> {
        let all: Vec<usize> = (0..data.len()).collect();
        let pixels = data.read(&all).map_err(|e| ClassifierError::Settings(e.to_string()))?;
        let right = model
            .describe(&pixels, device)
            .predictions()
            .iter()
            .zip(data.labels())
            .filter(|(p, l)| **p == **l as usize)
            .count();
        Ok(right as f64 / data.len().max(1) as f64)
    }

    /// Trains a classifier for `train`'s images and classes with Adam (cosine learning-rate
    /// decay) and random-shift augmentation, reports held-out accuracy on `test` after every
    /// epoch through `on_epoch(epoch, accuracy)`, and writes `classifier.json` + `classifier.bpk`
    /// into `out` (atomically, after training).
    #[allow(clippy::too_many_arguments)]
    pub fn train_classifier(
        train: &dyn ImageSource,
        test: &dyn ImageSource,
        epochs: usize,
        batch: usize,
        lr: f64,
        seed: u64,
        out: &Path,
        device: &Device,
        mut on_epoch: impl FnMut(usize, f64),
    ) -> Result<ClassifierRecord, ClassifierError> {
        let settings = |m: String| Err(ClassifierError::Settings(m));
        if train.labels().len() != train.len() || test.labels().len() != test.len() || train.is_empty() {
            return settings("the classifier needs labelled images (IDX label files, or class subfolders)".into());
        }
        if train.shape() != test.shape() {
            return settings(format!(
                "the training images are {:?} and the held-out ones {:?} (channels, height, width)",
                train.shape(),
                test.shape()
            ));
        }
        if train.shape()[1] < 8 {
            return settings(format!(
                "images of {} pixels are too small: at least 8",
                train.shape()[1]
            ));
        }
        if epochs == 0 || batch == 0 {
            return settings("the number of epochs and the batch size must be at least 1".into());
        }
        let classes = 1 + *train.labels().iter().chain(test.labels()).max().unwrap_or(&0) as usize;
        let shape = train.shape();
        let config = ImageClassifierConfig::new()
            .with_classes(classes)
            .with_image_shape((shape != MNIST_SHAPE).then_some(shape));
        let max_shift = 2usize;
        let train_device = device.clone().autodiff();
        let mut model = config.init(&train_device);
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
        let mut order = BatchSampler::new(train.len(), seed);
        let steps_per_epoch = train.len().div_ceil(batch);
        let per_image: usize = shape.iter().product();
        let mut accuracy_now = 0.0;
        for epoch in 0..epochs {
            for k in 0..steps_per_epoch {
                let step = epoch * steps_per_epoch + k;
                let indices = order.batch_at(step, batch);
                let mut rng = NoiseRng::new(NoiseRng::stream_seed(seed, step as u64));
                let span = 2 * max_shift + 1;
                let images = train
                    .read(&indices)
                    .map_err(|e| ClassifierError::Settings(e.to_string()))?;
                let pixels: Vec<f32> = images
                    .chunks(per_image)
                    .flat_map(|image| {
                        let dx = rng.below(span) as isize - max_shift as isize;
                        let dy = rng.below(span) as isize - max_shift as isize;
                        shifted(image, shape, dx, dy)
                    })
                    .collect();
                let labels: Vec<i64> = indices.iter().map(|&i| train.labels()[i] as i64).collect();
                let n = indices.len();
                let [c, h, w] = shape;
                let x = Tensor::<4>::from_data(TensorData::new(pixels, [n, c, h, w]), &train_device); // [n, c, h, w]
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &train_device); // [n]
                let loss = loss_fn.forward(model.forward(x), y); // [1]
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                // Cosine decay of the learning rate to 0 over the run.
                let progress = step as f64 / (epochs * steps_per_epoch) as f64;
                model = optim.step(lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()), model, grads);
            }
            accuracy_now = accuracy(&model.valid(), test, device)?;
            on_epoch(epoch + 1, accuracy_now);
        }
        let record = ClassifierRecord {
            config,
            epochs,
            batch,
            lr,
            seed,
            max_shift,
            test_accuracy: accuracy_now,
            test_images: test.len(),
        };
        let bytes = model
            .valid()
            .into_record()
            .into_bytes()
            .map_err(|e| ClassifierError::Settings(format!("saving the weights: {e}")))?
            .to_vec();
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |error| ClassifierError::Io { path, error }
        };
        std::fs::create_dir_all(out).map_err(io(out))?;
        let weights = out.join(CLASSIFIER_WEIGHTS_FILE);
        write_atomic(&weights, &bytes).map_err(io(&weights))?;
        let json = serde_json::to_string_pretty(&record).expect("serialises");
        let config = out.join(CLASSIFIER_CONFIG_FILE);
        write_atomic(&config, json.as_bytes()).map_err(io(&config))?;
        Ok(record)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn shifting_moves_every_channel_and_fills_with_black() {
            // Two 4 × 4 planes; the pixel at (x 1, y 2) moved by (2, −1) lands at (x 3, y 1) in
            // both; the corner (3, 3) falls off; everything else is black (−1).
            let mut image = vec![-1.0f32; 2 * 16];
            image[2 * 4 + 1] = 0.5;
            image[16 + 2 * 4 + 1] = 0.25;
            image[16 + 3 * 4 + 3] = 1.0;
            let moved = shifted(&image, [2, 4, 4], 2, -1);
            assert_eq!((moved[4 + 3], moved[16 + 4 + 3]), (0.5, 0.25));
            assert_eq!(moved.iter().filter(|&&v| v != -1.0).count(), 2);
        }
    }
}
