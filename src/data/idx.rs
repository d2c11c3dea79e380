//! The IDX format of MNIST (LeCun et al.): a big-endian header (magic number, count, sizes), then
//! the bytes. IDX3 holds images, IDX1 labels.

use super::{DataError, ImageDataset};

/// Parses an IDX3 (unsigned byte) image file: magic 0x00000803, count, rows, cols, pixels.
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
    if word(0) != 0x0803 {
        return Err(err(format!("magic number 0x{:08x}, expected 0x00000803", word(0))));
    }
    let (n, rows, cols) = (word(4), word(8), word(12));
    let expected = n
        .checked_mul(rows)
        .and_then(|v| v.checked_mul(cols))
        .ok_or_else(|| err("header sizes overflow".into()))?;
    if bytes.len() - 16 != expected {
        return Err(err(format!(
            "header says {n} images of {rows}×{cols} ({expected} bytes) but the file holds {} bytes",
            bytes.len() - 16
        )));
    }
    if n == 0 || rows == 0 || cols == 0 {
        return Err(err("the file holds no images".into()));
    }
    Ok(ImageDataset {
        pixels: bytes[16..].to_vec(),
        labels: Vec::new(),
        channels: 1,
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

/// Encodes images as an IDX3 file (what the set-up's converter and the tests write).
pub fn encode_idx_images(pixels: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let n = pixels.len() / (rows * cols);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [0x0803u32, n as u32, rows as u32, cols as u32] {
        out.extend(v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
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
