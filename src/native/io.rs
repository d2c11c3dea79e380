//! Writing files so that a crash or a full disk never leaves a half-written one: write beside the
//! target, then rename over it.

use crate::image::Picture;
use std::path::Path;

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same folder, flushed
/// to the disk (fsync), renamed over `path`, and the folder flushed too, so that after a power cut
/// `path` holds either the old bytes or the new ones.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("out");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = write_synced(&tmp, bytes)
        .and_then(|_| std::fs::rename(&tmp, path))
        .and_then(|_| sync_dir(path.parent().unwrap_or(Path::new("."))));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to a new or truncated file and flushes it to the disk before returning.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a folder's entries (new names, renames) to the disk.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

/// Encodes a grey or RGB picture as PNG bytes.
pub fn encode_png(image: &Picture) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, image.width as u32, image.height as u32);
        encoder.set_color(if image.channels == 3 {
            png::ColorType::Rgb
        } else {
            png::ColorType::Grayscale
        });
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("writing to memory");
        writer.write_image_data(&image.pixels).expect("writing to memory");
    }
    out
}

/// Writes a grey or RGB PNG atomically.
pub fn write_png(path: &Path, image: &Picture) -> std::io::Result<()> {
    write_atomic(path, &encode_png(image))
}
