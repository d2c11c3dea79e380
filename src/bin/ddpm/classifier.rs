//! `ddpm classifier`: trains the MNIST judge of `eval`.

use anyhow::{Context, Result};
use clap::Args;
use ddpm_explorer::data::{ImageDataset, Split};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct ClassifierArgs {
    /// Dataset folder with train-* and t10k-* IDX files (images and labels).
    #[arg(long, default_value = "data/mnist")]
    data: PathBuf,
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
    use ddpm_explorer::eval::classifier::train_classifier;
    let train = ImageDataset::load(&a.data, Split::Train).context("loading the training split")?;
    let test = ImageDataset::load(&a.data, Split::Test).context("loading the held-out split")?;
    let device = burn::tensor::Device::flex();
    eprintln!(
        "training the classifier on {} images, testing on {} held-out ones ({} epochs)",
        train.len(),
        test.len(),
        a.epochs
    );
    let started = std::time::Instant::now();
    let record = train_classifier(
        &train,
        &test,
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
