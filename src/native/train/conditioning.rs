//! Class-conditional training: label dropout (Ho & Salimans 2022) and the weights a run starts
//! from when it continues an exported model (`init_from`).

use super::{TrainConfig, TrainError, io_err};
use crate::model::weights::DiffusionConfig;
use crate::model::{UNet, UNetConfig};
use crate::rng::NoiseRng;
use burn::module::Module;
use burn::tensor::Device;
use std::path::Path;

/// The stream of a step's seed that draws its label dropout.
pub(super) const LABEL_DROPOUT_STREAM: u64 = 0x1abe1;

/// Each label as a class, replaced by "no class" (`None`) with probability `p_uncond` (Ho &
/// Salimans 2022, Algorithm 1): one uniform draw per image.
pub fn drop_labels(labels: impl IntoIterator<Item = u8>, p_uncond: f64, rng: &mut NoiseRng) -> Vec<Option<usize>> {
    labels
        .into_iter()
        .map(|l| (rng.next_f64() >= p_uncond).then_some(l as usize))
        .collect()
}

/// The weights a run starts from with `init_from`: the exported model there, for both the trained
/// weights (on `train_device`) and their EMA; made class-conditional (class embedding at zero)
/// when the recipe is and the model is not. Its architecture must be the recipe's.
pub(super) fn initial_weights(
    dir: &Path,
    config: &TrainConfig,
    train_device: &Device,
) -> Result<(UNet, UNet), TrainError> {
    let loaded = DiffusionConfig::load(dir)?;
    let wanted_unconditional = UNetConfig {
        num_classes: None,
        ..config.unet.clone()
    };
    let same_net = loaded.unet == config.unet
        || (loaded.unet.num_classes.is_none()
            && UNetConfig {
                skips: Some(loaded.unet.skip_layout()),
                ..loaded.unet.clone()
            } == UNetConfig {
                skips: Some(wanted_unconditional.skip_layout()),
                ..wanted_unconditional.clone()
            });
    if !same_net || loaded.schedule != config.schedule || loaded.timesteps != config.timesteps {
        return Err(TrainError::Settings(format!(
            "--init-from {}: its network or schedule differs from this run's (its config.json: {})",
            dir.display(),
            serde_json::to_string(&loaded).expect("serialises")
        )));
    }
    let bytes = std::fs::read(dir.join(crate::model::weights::WEIGHTS_FILE))
        .map_err(io_err(format!("reading the weights in {}", dir.display())))?;
    let unet = loaded.load_unet(bytes, train_device)?;
    let model = match (unet.num_classes(), config.unet.num_classes) {
        (None, Some(n)) => unet.with_zero_class_embedding(n, train_device),
        _ => unet,
    };
    // The EMA is a copy of these weights with the same parameter ids, which the EMA update pairs
    // on (a class embedding made twice would get two ids, and the EMA's would never move).
    let ema = model.valid();
    Ok((model, ema))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_dropped_at_the_stated_rate() {
        // 200,000 Bernoulli(0.1) draws: the share is 0.1 ± 0.00067 (one standard deviation);
        // ±0.003 is 4.5 of them. Kept labels keep their class.
        let mut rng = NoiseRng::new(3);
        let labels = (0..200_000u32).map(|i| (i % 10) as u8);
        let classes = drop_labels(labels, 0.1, &mut rng);
        let dropped = classes.iter().filter(|c| c.is_none()).count() as f64 / classes.len() as f64;
        assert!((dropped - 0.1).abs() < 0.003, "dropped {dropped}");
        for (i, c) in classes.iter().enumerate() {
            if let Some(c) = c {
                assert_eq!(*c, i % 10);
            }
        }
        // p = 0 keeps every label.
        assert!(drop_labels([1, 2, 3], 0.0, &mut rng).iter().all(Option::is_some));
    }
}
