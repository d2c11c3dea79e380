//! The IDX format of MNIST (LeCun et al.): a big-endian header (magic number, count, sizes), then
//! the bytes. IDX3 holds images, IDX1 labels.

use super::{DataError, ImageDataset};

/// Parses an IDX image file of unsigned bytes: IDX3 (magic 0x00000803: count, rows, cols, pixels;
/// grey, as MNIST) or IDX4 (magic 0x00000804: count, channels, rows, cols, pixels plane after plane;
/// colour images, as `export --examples` writes for an RGB model).
pub fn parse_idx_images(bytes: &[u8], path: &str) -> Result<ImageDataset, DataError> {
    let err = |reason: String| DataError::Format {
        path: path.to_string(),
        what: "image",
        reason,
    };
    if bytes.len() < 16 {
        return Err(err(format!("{} bytes is shorter than the 16-byte header", bytes.len())));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
    let (header, n, channels, rows, cols) = match word(0) {
        0x0803 => (16, word(4), 1, word(8), word(12)),
        0x0804 if bytes.len() >= 20 => (20, word(4), word(8), word(12), word(16)),
        magic => {
            return Err(err(format!(
                "magic number 0x{magic:08x}, expected 0x00000803 (or 0x00000804 for colour)"
            )));
        }
    };
    let expected = n
        .checked_mul(channels)
        .and_then(|v| v.checked_mul(rows))
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| err("header sizes overflow".into()))?;
    if bytes.len() - header != expected {
        return Err(err(format!(
            "header says {n} images of {channels}×{rows}×{cols} ({expected} bytes) but the file holds {} bytes",
            bytes.len() - header
        )));
    }
    if n == 0 || channels == 0 || rows == 0 || cols == 0 {
        return Err(err("the file holds no images".into()));
    }
    Ok(ImageDataset {
        pixels: bytes[header..].to_vec(),
        labels: Vec::new(),
        channels,
        rows,
        cols,
    })
}

/// Parses an IDX1 (unsigned byte) label file: magic 0x00000801, count, labels.
pub fn parse_idx_labels(bytes: &[u8], path: &str) -> Result<Vec<u8>, DataError> {
    let err = |reason: String| DataError::Format {
        path: path.to_string(),
        what: "label",
        reason,
    };
    if bytes.len() < 8 {
        return Err(err("shorter than the 8-byte header".into()));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]) as usize;
    if word(0) != 0x0801 {
        return Err(err(format!("magic number 0x{:08x}, expected 0x00000801", word(0))));
    }
    if bytes.len() - 8 != word(4) {
        return Err(err(format!(
            "header says {} labels, file holds {}",
            word(4),
            bytes.len() - 8
        )));
    }
    Ok(bytes[8..].to_vec())
}

/// Encodes grey images as an IDX3 file (what the set-up's converter and the tests write).
pub fn encode_idx_images(pixels: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let n = pixels.len() / (rows * cols);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [0x0803u32, n as u32, rows as u32, cols as u32] {
        out.extend(v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Encodes images as an IDX file: IDX3 when they are grey, IDX4 (count, channels, rows, cols)
/// otherwise.
pub fn encode_idx_dataset(images: &ImageDataset) -> Vec<u8> {
    if images.channels == 1 {
        return encode_idx_images(&images.pixels, images.rows, images.cols);
    }
    let mut out = Vec::with_capacity(20 + images.pixels.len());
    for v in [0x0804, images.len(), images.channels, images.rows, images.cols] {
        out.extend((v as u32).to_be_bytes());
    }
    out.extend_from_slice(&images.pixels);
    out
}

/// Encodes labels as an IDX1 file.
pub fn encode_idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    for v in [0x0801u32, labels.len() as u32] {
        out.extend(v.to_be_bytes());
    }
    out.extend_from_slice(labels);
    out
}
