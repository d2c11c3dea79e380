//! A folder of PNG and JPEG files as training images: searched recursively, each image
//! centre-cropped to a square and resized to the model's size (bilinear with antialiasing: the
//! `image` crate's `Triangle` filter), grey when every file is
//! grey and RGB otherwise (an alpha channel is dropped). With classes, an image's class is the
//! name of the first-level subfolder it is in (`cats/x.png`, `dogs/2024/y.jpg`: two classes).
//!
//! Every file is decoded once when the folder is opened, so a file that does not decode is reported
//! by path and skipped there, never in the middle of a run. The decoded images are kept in memory
//! while they fit the budget given; a larger set keeps only the file list and decodes each batch's
//! files when it is read.

use super::{DataError, ImageDataset, ImageSource, byte_to_unit, example_indices};
use crate::image::unit_to_byte;
use image::imageops::FilterType;
use image::{ColorType, DynamicImage};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File extensions read (compared without case).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];
/// The most classes a folder's labels can name (labels are bytes).
const MAX_FOLDER_CLASSES: usize = 256;
/// The smallest side an image folder may be resized to (`--image-size`).
pub const MIN_FOLDER_SIZE: usize = 16;
/// The largest.
pub const MAX_FOLDER_SIZE: usize = 128;
/// Files decoded together while a folder is opened (bounds the memory of the scan).
const SCAN_CHUNK: usize = 512;

/// A file that could not be used, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// The decoder's complaint.
    pub reason: String,
}

/// Training images read from a folder of PNG and JPEG files.
#[derive(Debug)]
pub struct ImageFolder {
    root: PathBuf,
    files: Vec<PathBuf>,
    labels: Vec<u8>,
    class_names: Vec<String>,
    channels: usize,
    size: usize,
    /// The decoded images while they fit the memory budget; `None`: read from the files.
    cached: Option<ImageDataset>,
    skipped: Vec<SkippedFile>,
}

/// One decoded, cropped and resized image: RGB bytes, and whether the file was grey.
struct Decoded {
    rgb: Vec<u8>,
    grey: bool,
}

fn decode(path: &Path, size: usize) -> Result<Decoded, String> {
    let image = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let grey = matches!(
        image.color(),
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16
    );
    // The centred square, then the resize (a crop after the resize would blend the cut-off edges in).
    let side = image.width().min(image.height());
    let square = image
        .crop_imm((image.width() - side) / 2, (image.height() - side) / 2, side, side)
        .resize_exact(size as u32, size as u32, FilterType::Triangle);
    Ok(Decoded {
        rgb: DynamicImage::ImageRgb8(square.to_rgb8()).into_bytes(),
        grey,
    })
}

/// `rgb` (interleaved, `size²` pixels) as the model's planes: one grey plane (the red one of a
/// grey file, whose three are equal) or three.
fn to_planes(rgb: &[u8], channels: usize) -> Vec<u8> {
    (0..channels)
        .flat_map(|c| rgb.iter().skip(c).step_by(3).copied())
        .collect()
}

/// Every image file under `dir`, in a fixed order (sorted paths), with its first-level subfolder
/// (`None` for files directly in `dir`).
fn image_files(dir: &Path) -> Result<Vec<(PathBuf, Option<String>)>, DataError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |error| DataError::Io { path, error }
    };
    let mut found = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), None::<String>)];
    while let Some((folder, class)) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let path = entry.map_err(io(&folder))?.path();
            if path.is_dir() {
                let class = class
                    .clone()
                    .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()));
                pending.push((path, class));
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                found.push((path, class.clone()));
            }
        }
    }
    found.sort();
    Ok(found)
}

impl ImageFolder {
    /// Opens `dir`: finds its images, decodes each once (skipping, and listing in
    /// [`Self::skipped`], the files that do not decode) and keeps them in memory when they take at
    /// most `memory_budget` bytes.
    pub fn open(dir: &Path, size: usize, memory_budget: usize) -> Result<Self, DataError> {
        if !dir.is_dir() {
            return Err(DataError::NotFound {
                path: dir.display().to_string(),
                split: "train",
            });
        }
        let candidates = image_files(dir)?;
        let mut files = Vec::new();
        let mut classes_of = Vec::new();
        let mut skipped = Vec::new();
        let mut all_grey = true;
        let mut rgb_cache = Some(Vec::new());
        for chunk in candidates.chunks(SCAN_CHUNK) {
            let decoded: Vec<_> = chunk.par_iter().map(|(path, _)| decode(path, size)).collect();
            for ((path, class), result) in chunk.iter().zip(decoded) {
                match result {
                    Ok(image) => {
                        all_grey &= image.grey;
                        files.push(path.clone());
                        classes_of.push(class.clone());
                        if let Some(cache) = &mut rgb_cache {
                            cache.extend_from_slice(&image.rgb);
                            if cache.len() > memory_budget {
                                rgb_cache = None;
                            }
                        }
                    }
                    Err(reason) => skipped.push(SkippedFile {
                        path: path.clone(),
                        reason,
                    }),
                }
            }
        }
        if files.is_empty() {
            return Err(DataError::Folder(format!(
                "no usable PNG or JPEG image in '{}' ({} found that did not decode)",
                dir.display(),
                skipped.len()
            )));
        }
        let channels = if all_grey { 1 } else { 3 };
        // Labels when every image is in a class folder and the classes fit a byte.
        let mut class_names: Vec<String> = classes_of.iter().flatten().cloned().collect();
        class_names.sort();
        class_names.dedup();
        let labelled = classes_of.iter().all(Option::is_some) && class_names.len() <= MAX_FOLDER_CLASSES;
        let labels: Vec<u8> = if labelled {
            classes_of
                .iter()
                .flatten()
                .map(|c| class_names.binary_search(c).expect("a known class") as u8)
                .collect()
        } else {
            Vec::new()
        };
        let cached = rgb_cache.map(|rgb| ImageDataset {
            pixels: rgb
                .chunks(3 * size * size)
                .flat_map(|image| to_planes(image, channels))
                .collect(),
            labels: labels.clone(),
            channels,
            rows: size,
            cols: size,
        });
        Ok(Self {
            root: dir.to_path_buf(),
            files,
            labels,
            class_names: if labelled { class_names } else { Vec::new() },
            channels,
            size,
            cached,
            skipped,
        })
    }

    /// The files that were found but did not decode.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// Whether the images are held in memory (else each batch is decoded from its files).
    pub fn in_memory(&self) -> bool {
        self.cached.is_some()
    }

    /// Examples of every class for the page's forward panel, as [`ImageDataset::examples`] picks
    /// them, as bytes.
    pub fn examples(&self, per_class: usize) -> Result<ImageDataset, DataError> {
        let picked = example_indices(&self.labels, self.len(), per_class);
        let values = self.read(&picked)?;
        Ok(ImageDataset {
            pixels: values.into_iter().map(unit_to_byte).collect(),
            labels: picked.iter().filter_map(|&i| self.labels.get(i).copied()).collect(),
            channels: self.channels,
            rows: self.size,
            cols: self.size,
        })
    }

    /// The class names (the first-level subfolders, sorted), in label order.
    pub fn class_names(&self) -> Result<Vec<String>, DataError> {
        if self.class_names.is_empty() {
            return Err(DataError::Folder(format!(
                "'{}' has no classes: every image must be in a first-level subfolder named after its class \
                 (at most {MAX_FOLDER_CLASSES})",
                self.root.display()
            )));
        }
        Ok(self.class_names.clone())
    }
}

impl ImageSource for ImageFolder {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn shape(&self) -> [usize; 3] {
        [self.channels, self.size, self.size]
    }

    fn labels(&self) -> &[u8] {
        &self.labels
    }

    fn read(&self, indices: &[usize]) -> Result<Vec<f32>, DataError> {
        if let Some(cached) = &self.cached {
            return cached.read(indices);
        }
        let images: Vec<Result<Vec<f32>, DataError>> = indices
            .par_iter()
            .map(|&i| {
                let path = &self.files[i];
                let image = decode(path, self.size)
                    .map_err(|reason| DataError::Folder(format!("'{}' no longer decodes: {reason}", path.display())))?;
                Ok(to_planes(&image.rgb, self.channels)
                    .into_iter()
                    .map(byte_to_unit)
                    .collect())
            })
            .collect();
        images.into_iter().try_fold(Vec::new(), |mut all, image| {
            all.extend(image?);
            Ok(all)
        })
    }
}
