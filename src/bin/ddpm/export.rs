//! `ddpm export`: copies a trained model, optionally as f16, and says how much ε̂ changes.

use anyhow::{Context, Result};
use clap::Args;
use ddpm_explorer::model::weights::load_model;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub(crate) struct ExportArgs {
    /// Model folder to read (e.g. runs/mnist/export).
    #[arg(long)]
    weights: PathBuf,
    /// Folder to write config.json and model.bpk into (e.g. assets).
    #[arg(long)]
    out: PathBuf,
    /// Store the weights as f16 (half the download; measured output change is printed).
    #[arg(long)]
    half: bool,
    /// Also write the page's real images for the forward panel: two of each class from this
    /// dataset's held-out split (e.g. data/fashion-mnist) or from this folder of images (cropped
    /// and resized to the model's size), what a model folder of the page holds.
    #[arg(long, value_name = "DATA")]
    examples: Option<PathBuf>,
}

pub(crate) fn run(a: ExportArgs) -> Result<()> {
    use ddpm_explorer::data::{
        EXAMPLE_IMAGES_FILE, EXAMPLE_LABELS_FILE, ImageDataset, Split, TrainingImages, encode_idx_dataset,
        encode_idx_labels, folder::ImageFolder,
    };
    use ddpm_explorer::model::weights::{CONFIG_FILE, WEIGHTS_FILE, unet_to_bytes, unet_to_half_bytes};
    use ddpm_explorer::native::train::export_model;
    let device = burn::tensor::Device::flex();
    let (config, unet) =
        load_model(&a.weights, &device).with_context(|| format!("loading weights from '{}'", a.weights.display()))?;
    // The examples before anything is written: a dataset that is not there, or not the model's
    // shape, stops the export.
    let size = config.unet.image_size;
    let examples = match &a.examples {
        Some(dir) => {
            let context = || format!("--examples: the held-out split or the images of '{}'", dir.display());
            // The held-out split of IDX files (the training split is not read), or the folder's images.
            let examples = if TrainingImages::names_idx(dir) {
                ImageDataset::load(dir, Split::Test).with_context(context)?.examples(2)
            } else {
                ImageFolder::open(dir, size, 1 << 30)
                    .and_then(|folder| folder.examples(2))
                    .with_context(context)?
            };
            let shape = [examples.channels, examples.rows, examples.cols];
            if shape != [config.unet.image_channels, size, size] {
                anyhow::bail!(
                    "--examples: the images are {shape:?} (channels, rows, cols) but the model draws {:?}",
                    [config.unet.image_channels, size, size]
                );
            }
            Some(examples)
        }
        None => None,
    };
    let bytes = if a.half {
        unet_to_half_bytes(&unet)?
    } else {
        unet_to_bytes(unet.clone())?
    };
    // How much the stored precision changes ε̂, on a fixed batch of noisy inputs.
    let exported = config.load_unet(bytes.clone(), &device)?;
    let x = ddpm_explorer::rng::NoiseRng::new(0).normal_tensor([8, config.unet.image_channels, size, size], &device);
    let t: Vec<usize> = (0..8).map(|i| i * (config.timesteps - 1) / 7).collect();
    let diff = (unet.forward(x.clone(), &t) - exported.forward(x, &t))
        .abs()
        .max()
        .into_scalar::<f32>();
    export_model(&a.out, &config, &bytes).with_context(|| format!("writing '{}'", a.out.display()))?;
    if let Some(examples) = examples {
        use ddpm_explorer::native::io::write_atomic;
        let images = encode_idx_dataset(&examples);
        let written = write_atomic(&a.out.join(EXAMPLE_IMAGES_FILE), &images)
            .and_then(|()| write_atomic(&a.out.join(EXAMPLE_LABELS_FILE), &encode_idx_labels(&examples.labels)));
        written.with_context(|| format!("writing the examples into '{}'", a.out.display()))?;
        eprintln!("wrote {} real images for the page's forward panel", examples.len());
    }
    eprintln!(
        "wrote {} ({} bytes, {}) and {}; largest change of ε̂ on 8 test inputs: {diff:.2e}",
        a.out.join(WEIGHTS_FILE).display(),
        bytes.len(),
        if a.half { "f16" } else { "f32" },
        a.out.join(CONFIG_FILE).display()
    );
    Ok(())
}
