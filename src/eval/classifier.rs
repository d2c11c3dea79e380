//! The project's own MNIST classifier: the judge of sample quality.
//!
//! A small CNN (three 3×3 convolutions with max-pooling, a 128-unit hidden layer, 10 logits). Its
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

/// Configuration of [`DigitClassifier`].
#[derive(Config, Debug, PartialEq)]
pub struct DigitClassifierConfig {
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
}

impl DigitClassifierConfig {
    /// Builds the network with freshly initialised weights.
    pub fn init(&self, device: &Device) -> DigitClassifier {
        let [c1, c2, c3] = self.channels;
        let conv = |c_in: usize, c_out: usize| {
            Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        DigitClassifier {
            conv1: conv(1, c1),
            conv2: conv(c1, c2),
            conv3: conv(c2, c3),
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            hidden: LinearConfig::new(c3 * 3 * 3, self.features).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            logits: LinearConfig::new(self.features, self.classes).init(device),
        }
    }

    /// Builds the network and loads burnpack `bytes` into it (shape-checked).
    pub fn load(&self, bytes: Vec<u8>, device: &Device) -> Result<DigitClassifier, WeightsError> {
        crate::model::weights::load_weights(self.init(device), bytes)
    }
}

/// conv → ReLU → pool (28 → 14) → conv → ReLU → pool (→ 7) → conv → ReLU → pool (→ 3) →
/// linear → ReLU (the features) → dropout → linear (the logits).
#[derive(Module, Debug)]
pub struct DigitClassifier {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    pool: MaxPool2d,
    hidden: Linear,
    dropout: Dropout,
    logits: Linear,
}

impl DigitClassifier {
    /// Dimensions of the feature space ([`Self::features`]).
    pub fn feature_count(&self) -> usize {
        self.hidden.weight.dims()[1]
    }

    /// The hidden-layer activations: the feature space of the Fréchet distance.
    ///
    /// # Shapes
    /// - `x`: `[batch, 1, 28, 28]`, pixels in [−1, 1]
    /// - returns `[batch, features]`
    pub fn features(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(x))); // [b, c1, 14, 14]
        let x = self.pool.forward(relu(self.conv2.forward(x))); // [b, c2, 7, 7]
        let x = self.pool.forward(relu(self.conv3.forward(x))); // [b, c3, 3, 3]
        let x = x.flatten::<2>(1, 3); // [b, c3·9]
        relu(self.hidden.forward(x)) // [b, features]
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[batch, 1, 28, 28]`
    /// - returns `[batch, classes]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let h = self.features(x); // [b, features]
        self.logits.forward(self.dropout.forward(h)) // [b, classes]
    }

    /// Features and class probabilities of `images` (flat `[n · 28 · 28]` pixels in [−1, 1]),
    /// computed in batches and read back to the host.
    pub fn describe(&self, images: &[f32], device: &Device) -> Described {
        const BATCH: usize = 250;
        let per_image = 28 * 28;
        let mut out = Described::default();
        for chunk in images.chunks(BATCH * per_image) {
            let n = chunk.len() / per_image;
            let x = Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [n, 1, 28, 28]), device); // [n, 1, 28, 28]
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
    pub config: DigitClassifierConfig,
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
    use crate::data::{BatchSampler, ImageDataset, bytes_to_unit};
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
    ) -> Result<(ClassifierRecord, DigitClassifier), ClassifierError> {
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

    /// A copy of a 28×28 byte image moved by (dx, dy) pixels, the background filling in.
    fn shifted(image: &[u8], dx: isize, dy: isize) -> Vec<u8> {
        let mut out = vec![0u8; 28 * 28];
        for y in 0..28isize {
            for x in 0..28isize {
                let (sx, sy) = (x - dx, y - dy);
                if (0..28).contains(&sx) && (0..28).contains(&sy) {
                    out[(y * 28 + x) as usize] = image[(sy * 28 + sx) as usize];
                }
            }
        }
        out
    }

    /// Share of `data` that `model` classifies correctly.
    pub fn accuracy(model: &DigitClassifier, data: &ImageDataset, device: &Device) -> f64 {
        let described = model.describe(&data.pixels(0..data.len()), device);
        let right = described
            .predictions()
            .iter()
            .zip(&data.labels)
            .filter(|(p, l)| **p == **l as usize)
            .count();
        right as f64 / data.len().max(1) as f64
    }

    /// Trains the classifier with Adam (cosine learning-rate decay) and random-shift augmentation, reports held-out accuracy
    /// after every epoch through `on_epoch(epoch, accuracy)`, and writes `classifier.json` +
    /// `classifier.bpk` into `out` (atomically, after training).
    #[allow(clippy::too_many_arguments)]
    pub fn train_classifier(
        train: &ImageDataset,
        test: &ImageDataset,
        epochs: usize,
        batch: usize,
        lr: f64,
        seed: u64,
        out: &Path,
        device: &Device,
        mut on_epoch: impl FnMut(usize, f64),
    ) -> Result<ClassifierRecord, ClassifierError> {
        let settings = |m: &str| Err(ClassifierError::Settings(m.into()));
        if train.labels.len() != train.len() || test.labels.len() != test.len() {
            return settings("the classifier needs labelled data (labels-idx1 files beside the images)");
        }
        if epochs == 0 || batch == 0 {
            return settings("the number of epochs and the batch size must be at least 1");
        }
        let config = DigitClassifierConfig::new();
        let max_shift = 2usize;
        let train_device = device.clone().autodiff();
        let mut model = config.init(&train_device);
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&train_device);
        let mut order = BatchSampler::new(train.len(), seed);
        let steps_per_epoch = train.len().div_ceil(batch);
        let mut accuracy_now = 0.0;
        for epoch in 0..epochs {
            for k in 0..steps_per_epoch {
                let step = epoch * steps_per_epoch + k;
                let indices = order.batch_at(step, batch);
                let mut rng = NoiseRng::new(NoiseRng::stream_seed(seed, step as u64));
                let span = 2 * max_shift + 1;
                let pixels: Vec<f32> = indices
                    .iter()
                    .flat_map(|&i| {
                        let dx = rng.below(span) as isize - max_shift as isize;
                        let dy = rng.below(span) as isize - max_shift as isize;
                        bytes_to_unit(&shifted(train.image(i), dx, dy))
                    })
                    .collect();
                let labels: Vec<i64> = indices.iter().map(|&i| train.labels[i] as i64).collect();
                let n = indices.len();
                let x = Tensor::<4>::from_data(TensorData::new(pixels, [n, 1, 28, 28]), &train_device); // [n, 1, 28, 28]
                let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &train_device); // [n]
                let loss = loss_fn.forward(model.forward(x), y); // [1]
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                // Cosine decay of the learning rate to 0 over the run.
                let progress = step as f64 / (epochs * steps_per_epoch) as f64;
                model = optim.step(lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()), model, grads);
            }
            accuracy_now = accuracy(&model.valid(), test, device);
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
        fn shifting_moves_pixels_and_fills_with_background() {
            let mut image = vec![0u8; 28 * 28];
            image[5 * 28 + 7] = 200; // (x 7, y 5)
            image[27 * 28 + 27] = 9; // the corner falls off when moved right/down
            let moved = shifted(&image, 2, -1);
            assert_eq!(moved[4 * 28 + 9], 200);
            assert_eq!(moved.iter().map(|&b| b as u32).sum::<u32>(), 200);
        }
    }
}
