//! `ddpm classifier`: trains the judge of `eval` for a dataset.

use anyhow::{Context, Result};
use clap::Args;
use ddpm_explorer::data::TrainingImages;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct ClassifierArgs {
    /// Labelled training images: a folder with train-* and t10k-* IDX files (images and labels),
    /// or a folder of PNG/JPEG files in one subfolder per class (then name --held-out).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
    /// Held-out images to measure the accuracy on [default: the IDX files' t10k-* split]: an image
    /// folder with the same class subfolders as --data's.
    #[arg(long)]
    held_out: Option<PathBuf>,
    /// Image folders: the height and width the images are cropped and resized to (the size of the
    /// model to be judged).
    #[arg(long, default_value_t = 28, value_name = "SIDE")]
    image_size: usize,
    /// Image folders: keep the decoded images in memory up to this many MiB; a larger set is read
    /// from its files batch by batch.
    #[arg(long, default_value_t = 4096, value_name = "MIB")]
    data_memory: usize,
    /// Folder to write classifier.json and classifier.bpk into.
    #[arg(long, default_value = "training/classifier")]
    out: PathBuf,
    /// Passes over the training split.
    #[arg(long, default_value_t = 15)]
    epochs: usize,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Peak Adam learning rate (cosine decay to 0).
    #[arg(long, default_value_t = 2e-3)]
    lr: f64,
    /// Seed of data order and augmentation.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub(crate) fn run(a: ClassifierArgs) -> Result<()> {
    use ddpm_explorer::data::folder::{MAX_FOLDER_SIZE, MIN_FOLDER_SIZE};
    use ddpm_explorer::eval::classifier::train_classifier;
    if !(MIN_FOLDER_SIZE..=MAX_FOLDER_SIZE).contains(&a.image_size) {
        anyhow::bail!(
            "--image-size must be from {MIN_FOLDER_SIZE} to {MAX_FOLDER_SIZE} (got {})",
            a.image_size
        );
    }
    let (train, test) =
        TrainingImages::open_with_held_out(&a.data, a.held_out.as_deref(), a.image_size, a.data_memory << 20)
            .context("loading the training and held-out images")?;
    let (train, test) = (train.source(), test.source());
    let device = burn::tensor::Device::flex();
    eprintln!(
        "training the classifier on {} images ({:?}: channels, height, width), testing on {} held-out ones ({} epochs)",
        train.len(),
        train.shape(),
        test.len(),
        a.epochs
    );
    let started = std::time::Instant::now();
    let record = train_classifier(
        train,
        test,
        a.epochs,
        a.batch,
        a.lr,
        a.seed,
        &a.out,
        &device,
        |epoch, acc| {
            eprintln!(
                "epoch {epoch:>3}: held-out accuracy {:.2} %  ({:.0} s)",
                acc * 100.0,
                started.elapsed().as_secs_f64()
            )
        },
    )?;
    eprintln!(
        "wrote {} : test accuracy {:.2} % on {} held-out images",
        a.out.display(),
        record.test_accuracy * 100.0,
        record.test_images
    );
    Ok(())
}
