//! Training the classifier and loading it from its folder (native only).

use super::*;
use crate::data::{BatchSampler, ImageSource};
use crate::native::io::write_atomic;
use crate::rng::NoiseRng;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Int;
use std::path::Path;

/// Loads `classifier.json` + `classifier.bpk` from a folder.
pub fn load_classifier(dir: &Path, device: &Device) -> Result<(ClassifierRecord, ImageClassifier), ClassifierError> {
    // A file's bytes and its name for messages.
    let read = |name: &str| {
        let path = dir.join(name).display().to_string();
        std::fs::read(&path)
            .map(|bytes| (bytes, path.clone()))
            .map_err(|error| ClassifierError::Io { path, error })
    };
    let (json, path) = read(CLASSIFIER_CONFIG_FILE)?;
    let record: ClassifierRecord = serde_json::from_slice(&json).map_err(|e| ClassifierError::Record {
        path,
        reason: e.to_string(),
    })?;
    let (bytes, path) = read(CLASSIFIER_WEIGHTS_FILE)?;
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
    // Dropout draws its masks from the device: seeded, a run is the same every time.
    train_device.seed(seed);
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
