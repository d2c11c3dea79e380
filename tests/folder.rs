//! Image folders as training data: grey, RGB, odd-sized and broken files, classes from
//! subfolders, the centre crop, and the same pixels whether a folder is held in memory or read
//! batch by batch.

use ddpm_explorer::data::folder::ImageFolder;
use ddpm_explorer::data::{DataError, ImageSource, byte_to_unit};
use image::{GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use std::path::Path;

/// cats/a.png: RGB 30 × 10, thirds red | green | blue (its centre square is all green);
/// cats/b.jpg: grey 16 × 16, all 200; dogs/2024/c.png: grey 64 × 64, white above black;
/// dogs/broken.png: not an image; notes.txt: not an image file at all.
fn write_mixed_folder(dir: &Path) {
    for sub in ["cats", "dogs/2024"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let thirds = RgbImage::from_fn(30, 10, |x, _| match x / 10 {
        0 => Rgb([255, 0, 0]),
        1 => Rgb([0, 255, 0]),
        _ => Rgb([0, 0, 255]),
    });
    thirds.save(dir.join("cats/a.png")).unwrap();
    GrayImage::from_pixel(16, 16, Luma([200]))
        .save_with_format(dir.join("cats/b.jpg"), ImageFormat::Jpeg)
        .unwrap();
    GrayImage::from_fn(64, 64, |_, y| Luma([if y < 32 { 255 } else { 0 }]))
        .save(dir.join("dogs/2024/c.png"))
        .unwrap();
    std::fs::write(dir.join("dogs/broken.png"), b"\x89PNG\r\n\x1a\n not really").unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

#[test]
fn a_mixed_folder_reads_as_rgb_with_its_classes_and_skips_what_does_not_decode() {
    let tmp = tempfile::tempdir().unwrap();
    write_mixed_folder(tmp.path());
    let folder = ImageFolder::open(tmp.path(), 16, 1 << 20).unwrap();
    assert!(folder.in_memory());
    // One colour file makes the set RGB; the broken file is skipped by name, the text file ignored.
    assert_eq!((folder.len(), folder.shape()), (3, [3, 16, 16]));
    assert_eq!(folder.skipped().len(), 1);
    assert!(folder.skipped()[0].path.ends_with("dogs/broken.png"));
    // Classes are the first-level subfolders, sorted; the files in path order.
    assert_eq!(folder.class_names().unwrap(), ["cats", "dogs"]);
    assert_eq!(folder.labels(), [0, 0, 1]);
    let plane = 16 * 16;
    let images = folder.read(&[0, 1, 2]).unwrap();
    assert_eq!(images.len(), 3 * 3 * plane);
    let (a, b, c) = (
        &images[..3 * plane],
        &images[3 * plane..6 * plane],
        &images[6 * plane..],
    );
    // a.png's centre square is pure green: R and B planes all −1, G all +1.
    assert!(a[..plane].iter().chain(&a[2 * plane..]).all(|&v| v == -1.0), "{a:?}");
    assert!(a[plane..2 * plane].iter().all(|&v| v == 1.0));
    // The grey JPEG: three equal planes near 200 (JPEG rounds a flat block to within a level).
    let grey = byte_to_unit(200);
    assert!(b.iter().all(|&v| (v - grey).abs() <= 2.0 / 127.5), "{b:?}");
    assert_eq!(b[..plane], b[plane..2 * plane]);
    // c.png shrunk 4×: the top row white, the bottom row black, in every plane.
    for p in 0..3 {
        let c = &c[p * plane..(p + 1) * plane];
        assert!(c[..16].iter().all(|&v| v == 1.0) && c[15 * 16..].iter().all(|&v| v == -1.0));
    }
    // Over a memory budget of nothing, the batch is read from the files: the same values.
    let streamed = ImageFolder::open(tmp.path(), 16, 0).unwrap();
    assert!(!streamed.in_memory());
    assert_eq!(streamed.read(&[2, 0]).unwrap(), [c, a].concat());
}

#[test]
fn grey_files_make_a_grey_set_and_files_outside_class_folders_have_no_class() {
    let tmp = tempfile::tempdir().unwrap();
    GrayImage::from_pixel(20, 20, Luma([0]))
        .save(tmp.path().join("x.png"))
        .unwrap();
    std::fs::create_dir(tmp.path().join("ones")).unwrap();
    GrayImage::from_pixel(8, 8, Luma([255]))
        .save(tmp.path().join("ones/y.png"))
        .unwrap();
    let folder = ImageFolder::open(tmp.path(), 16, 1 << 20).unwrap();
    assert_eq!(folder.shape(), [1, 16, 16]);
    // Upscaled 8 → 16 it stays white.
    assert!(folder.read(&[0]).unwrap().iter().all(|&v| v == 1.0));
    assert!(folder.labels().is_empty());
    assert!(folder.class_names().unwrap_err().to_string().contains("subfolder"));
}

#[test]
fn a_folder_with_no_usable_image_is_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.jpg"), b"nope").unwrap();
    let err = ImageFolder::open(tmp.path(), 16, 1 << 20).unwrap_err();
    assert!(matches!(err, DataError::Folder(_)));
    assert!(err.to_string().contains("no usable PNG or JPEG image"), "{err}");
    assert!(err.to_string().contains("1 found that did not decode"), "{err}");
    let missing = ImageFolder::open(&tmp.path().join("missing"), 16, 1 << 20).unwrap_err();
    assert!(matches!(missing, DataError::NotFound { .. }));
}
