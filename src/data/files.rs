//! Reading training data from disk (native only): IDX files, plain or gzip-compressed, class
//! names from `classes.txt`, and [`TrainingImages`], what `--data` names.

use super::folder::ImageFolder;
use super::{DataError, ImageDataset, ImageSource, Split, parse_idx_images, parse_idx_labels};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A training set as `--data` names it: IDX files (a folder holding them, or an image file) or a
/// folder of PNG and JPEG files.
#[derive(Debug)]
pub enum TrainingImages {
    /// IDX files, in memory.
    Idx(ImageDataset),
    /// An image folder.
    Folder(ImageFolder),
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let io = |error| DataError::Io {
        path: path.display().to_string(),
        error,
    };
    let raw = std::fs::read(path).map_err(io)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

impl TrainingImages {
    /// Opens the training split at `path`: IDX files when `path` is one or a folder holding
    /// `train-images-idx3-ubyte[.gz]`, else a folder of images, cropped and resized to `size`
    /// and kept in memory up to `memory_budget` bytes.
    pub fn open(path: &Path, size: usize, memory_budget: usize) -> Result<Self, DataError> {
        if Self::names_idx(path) {
            Ok(Self::Idx(ImageDataset::load(path, Split::Train)?))
        } else {
            Ok(Self::Folder(ImageFolder::open(path, size, memory_budget)?))
        }
    }

    /// The training images at `path` (as [`Self::open`]) and held-out images to judge against:
    /// `held_out` when given (IDX files' held-out split, or an image folder), else the held-out
    /// split (`t10k-*`) of the IDX files at `path`. An image folder has no held-out split of its
    /// own, so one must be named; two folders must hold the same classes.
    pub fn open_with_held_out(
        path: &Path,
        held_out: Option<&Path>,
        size: usize,
        memory_budget: usize,
    ) -> Result<(Self, Self), DataError> {
        let train = Self::open(path, size, memory_budget)?;
        let test = match (held_out, &train) {
            (None, Self::Idx(_)) => Self::Idx(ImageDataset::load(path, Split::Test)?),
            (None, Self::Folder(_)) => {
                return Err(DataError::Folder(format!(
                    "'{}' is an image folder, which has no held-out split: name a folder of images it \
                     does not hold with --held-out",
                    path.display()
                )));
            }
            (Some(held_out), _) if Self::names_idx(held_out) => Self::Idx(ImageDataset::load(held_out, Split::Test)?),
            (Some(held_out), _) => Self::Folder(ImageFolder::open(held_out, size, memory_budget)?),
        };
        if let (Self::Folder(a), Self::Folder(b)) = (&train, &test)
            && a.class_names().ok() != b.class_names().ok()
        {
            return Err(DataError::Folder(format!(
                "'{}' and '{}' do not hold the same class folders",
                path.display(),
                held_out.unwrap_or(path).display()
            )));
        }
        Ok((train, test))
    }

    /// Whether `path` names IDX files (an IDX file, or a folder holding the training split's)
    /// rather than a folder of images; nothing is read.
    pub fn names_idx(path: &Path) -> bool {
        !path.is_dir() || find(path, &format!("{}-images-idx3-ubyte", Split::Train.prefix())).is_some()
    }

    /// The images.
    pub fn source(&self) -> &(dyn ImageSource + Sync) {
        match self {
            Self::Idx(data) => data,
            Self::Folder(folder) => folder,
        }
    }

    /// The class names, in label order (see [`ImageDataset::class_names`] and
    /// [`ImageFolder::class_names`]).
    pub fn class_names(&self, path: &Path) -> Result<Vec<String>, DataError> {
        match self {
            Self::Idx(data) => data.class_names(path),
            Self::Folder(folder) => folder.class_names(),
        }
    }
}

impl ImageDataset {
    /// The class names of this labelled dataset, loaded from `path`: `classes.txt` (a name
    /// per line) in its folder, else the label numbers 0 … the largest label.
    pub fn class_names(&self, path: &Path) -> Result<Vec<String>, DataError> {
        let Some(&max) = self.labels.iter().max() else {
            return Err(DataError::NoLabels(path.display().to_string()));
        };
        let dir = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(path)
        };
        let file = dir.join("classes.txt");
        if !file.is_file() {
            return Ok((0..=max).map(|i| i.to_string()).collect());
        }
        let text = std::fs::read_to_string(&file).map_err(|error| DataError::Io {
            path: file.display().to_string(),
            error,
        })?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.len() <= max as usize {
            return Err(DataError::ClassNames {
                path: file.display().to_string(),
                names: names.len(),
                max,
            });
        }
        Ok(names)
    }

    /// Loads a split from a folder of IDX files, or an IDX image file (its labels are looked
    /// for beside it, `images-idx3` replaced by `labels-idx1`; a split is ignored then).
    pub fn load(path: &Path, split: Split) -> Result<Self, DataError> {
        if !path.exists() {
            return Err(DataError::NotFound {
                path: path.display().to_string(),
                split: split.prefix(),
            });
        }
        let images_path = if path.is_dir() {
            find(path, &format!("{}-images-idx3-ubyte", split.prefix())).ok_or_else(|| DataError::NotFound {
                path: path.display().to_string(),
                split: split.prefix(),
            })?
        } else {
            path.to_path_buf()
        };
        let shown = images_path.display().to_string();
        let data = parse_idx_images(&read_maybe_gz(&images_path)?, &shown)?;
        let name = images_path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let labels_path = name
            .contains("images-idx3")
            .then(|| images_path.with_file_name(name.replace("images-idx3", "labels-idx1")))
            .filter(|p| p.is_file());
        match labels_path {
            Some(p) => {
                let shown = p.display().to_string();
                data.with_labels(parse_idx_labels(&read_maybe_gz(&p)?, &shown)?)
            }
            None => Ok(data),
        }
    }
}
