//! Shipping a trained model: the U-Net's burnpack weights plus `config.json` describing the
//! architecture and the noise schedule it was trained with. Reading works from bytes, so the
//! browser (fetched assets) and the CLI (files) share it.

use crate::diffusion::schedule::{NoiseSchedule, ScheduleError, ScheduleKind};
use crate::model::{UNet, UNetConfig, UNetConfigError};
use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

/// File name of the weights inside a model folder.
pub const WEIGHTS_FILE: &str = "model.bpk";
/// File name of the configuration inside a model folder.
pub const CONFIG_FILE: &str = "config.json";

/// Errors in loading a model.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The configuration is not valid JSON of the expected shape.
    #[error("invalid model config: {0}")]
    Config(String),
    /// The configuration describes an impossible network.
    #[error("invalid model config: {0}")]
    Architecture(#[from] UNetConfigError),
    /// The configuration names an invalid schedule.
    #[error("invalid model config: {0}")]
    Schedule(#[from] ScheduleError),
    /// The weights are not a burnpack file, are truncated, or belong to another architecture.
    #[error("weights do not fit this model ({reason}): the file is corrupt, truncated or from another architecture")]
    Weights {
        /// burn's own message.
        reason: String,
    },
    /// The weights hold NaN or infinite values.
    #[error("the weights hold NaN or infinite values in '{tensor}': they were saved from a diverged run")]
    NonFinite {
        /// The first tensor found with one.
        tensor: String,
    },
}

/// Everything needed to rebuild a trained diffusion model, saved as `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffusionConfig {
    /// The network.
    pub unet: UNetConfig,
    /// The β schedule it was trained with.
    pub schedule: ScheduleKind,
    /// T.
    pub timesteps: usize,
    /// A class-conditional model's class names, in label order ("0" … "9" for digits, "Sneaker"
    /// … for Fashion-MNIST); absent for unconditional models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

impl DiffusionConfig {
    /// The class names of a conditional model: the recorded ones, or the label numbers when
    /// none were recorded; empty for an unconditional model.
    pub fn class_names(&self) -> Vec<String> {
        match (self.unet.num_classes, &self.class_names) {
            (Some(n), Some(names)) if names.len() == n => names.clone(),
            (Some(n), _) => (0..n).map(|i| i.to_string()).collect(),
            (None, _) => Vec::new(),
        }
    }

    /// Parses `config.json` contents and validates them.
    pub fn from_json(json: &str) -> Result<Self, WeightsError> {
        let config: Self = serde_json::from_str(json).map_err(|e| WeightsError::Config(e.to_string()))?;
        config.unet.validate()?;
        config.noise_schedule()?;
        if let Some(names) = &config.class_names
            && Some(names.len()) != config.unet.num_classes
        {
            return Err(WeightsError::Config(format!(
                "{} class names for a model with {} classes",
                names.len(),
                config.unet.num_classes.unwrap_or(0)
            )));
        }
        Ok(config)
    }

    /// Pretty JSON for `config.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }

    /// The schedule this config names.
    pub fn noise_schedule(&self) -> Result<NoiseSchedule, ScheduleError> {
        NoiseSchedule::new(self.schedule, self.timesteps)
    }

    /// Builds the network and loads burnpack `bytes` into it (f16 files are cast to f32).
    /// Shapes and names are checked: a file of another architecture is an error, not a panic.
    pub fn load_unet(&self, bytes: Vec<u8>, device: &Device) -> Result<UNet, WeightsError> {
        self.unet.validate()?;
        load_weights(self.unet.init(device), bytes)
    }
}

/// Loads burnpack `bytes` into `module` (f16 files are cast to the module's dtype). Names and
/// shapes are checked: unreadable bytes or another architecture are an error, not a panic.
pub fn load_weights<M: Module>(module: M, bytes: Vec<u8>) -> Result<M, WeightsError> {
    let bad = |reason: String| WeightsError::Weights { reason };
    check_finite(&bytes)?;
    let record = std::panic::catch_unwind(|| ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)))
        .map_err(|_| bad("unreadable burnpack data".into()))?
        .map_err(|e| bad(e.to_string()))?
        .cast_to_module_dtype();
    module.try_load_record(record).map_err(|e| bad(e.to_string()))
}

/// Refuses burnpack `bytes` that hold a NaN or an infinity in any float tensor (a model saved from
/// a diverged run), by reading the file's tensors on the host before any model is built.
pub fn check_finite(bytes: &[u8]) -> Result<(), WeightsError> {
    use burn_pack::{DType, Reader};
    let bad = |reason: String| WeightsError::Weights { reason };
    let reader = Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(|e| bad(e.to_string()))?;
    for tensor in reader.into_tensors().map_err(|e| bad(e.to_string()))? {
        let (name, dtype, _, _, data) = tensor.into_parts().map_err(|e| bad(e.to_string()))?;
        let finite = match dtype {
            DType::F32 => data
                .chunks_exact(4)
                .all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite()),
            // IEEE half: exponent bits all ones is ∞ or NaN.
            DType::F16 => data
                .chunks_exact(2)
                .all(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7c00 != 0x7c00),
            DType::F64 => data
                .chunks_exact(8)
                .all(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")).is_finite()),
            _ => true,
        };
        if !finite {
            return Err(WeightsError::NonFinite { tensor: name });
        }
    }
    Ok(())
}

#[cfg(feature = "native")]
mod files {
    use super::*;
    use std::path::Path;

    impl DiffusionConfig {
        /// Reads `config.json` from a model folder.
        pub fn load(dir: &Path) -> Result<Self, WeightsError> {
            let path = dir.join(CONFIG_FILE);
            let json =
                std::fs::read_to_string(&path).map_err(|e| WeightsError::Config(format!("{}: {e}", path.display())))?;
            Self::from_json(&json)
        }
    }

    /// Loads a model folder (`config.json` + `model.bpk`), or a `.bpk` file with its
    /// `config.json` beside it.
    pub fn load_model(path: &Path, device: &Device) -> Result<(DiffusionConfig, UNet), WeightsError> {
        let (dir, weights) = if path.is_dir() {
            (path.to_path_buf(), path.join(WEIGHTS_FILE))
        } else {
            (
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
                path.to_path_buf(),
            )
        };
        let config = DiffusionConfig::load(&dir)?;
        let bytes = std::fs::read(&weights).map_err(|e| WeightsError::Weights {
            reason: format!("{}: {e}", weights.display()),
        })?;
        let unet = config.load_unet(bytes, device)?;
        Ok((config, unet))
    }
}

#[cfg(feature = "native")]
pub use files::load_model;

/// Serialises a model's weights to burnpack bytes. Reads the tensors back synchronously: natively,
/// or from burn's CPU backend in the browser (a WebGPU tensor cannot be read that way there).
pub fn unet_to_bytes(unet: UNet) -> Result<Vec<u8>, WeightsError> {
    unet.into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| WeightsError::Weights { reason: e.to_string() })
}

/// Serialises a model's weights to burnpack bytes in half precision (f16): half the download.
/// [`DiffusionConfig::load_unet`] casts them back to f32 on load.
#[cfg(feature = "native")]
pub fn unet_to_half_bytes(unet: &UNet) -> Result<Vec<u8>, WeightsError> {
    use burn::store::{BurnpackStore, HalfPrecisionAdapter, ModuleSnapshot};
    let error = |e: String| WeightsError::Weights { reason: e };
    let mut store = BurnpackStore::from_bytes(None).with_to_adapter(HalfPrecisionAdapter::new());
    unet.save_into(&mut store).map_err(|e| error(e.to_string()))?;
    store.get_bytes().map(|b| b.to_vec()).map_err(|e| error(e.to_string()))
}
