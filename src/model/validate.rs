//! What a [`UNetConfig`] may ask for: every size positive and below a stated bound, so a typo or a
//! hostile `config.json` is refused with the setting's name instead of building a network that
//! cannot run.

use super::unet::{MAX_CLASSES, UNetConfig};

/// An invalid [`UNetConfig`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UNetConfigError {
    /// The image size does not survive the downsampling.
    #[error("image size {size} is too small for {levels} resolution levels")]
    TooSmall {
        /// image_size.
        size: usize,
        /// Levels.
        levels: usize,
    },
    /// A zero-sized setting.
    #[error("U-Net setting '{0}' must be positive")]
    Zero(&'static str),
    /// A setting above its bound.
    #[error("U-Net setting '{name}' is {value}, above its bound of {max}")]
    TooLarge {
        /// The setting.
        name: &'static str,
        /// Its value.
        value: usize,
        /// The bound.
        max: usize,
    },
    /// An attention resolution that no level has.
    #[error("attention resolution {resolution} is not one of the levels' resolutions ({levels:?})")]
    AttentionResolution {
        /// The resolution asked for.
        resolution: usize,
        /// The levels' resolutions.
        levels: Vec<usize>,
    },
    /// A dropout probability outside [0, 1).
    #[error("U-Net dropout must be in [0, 1) (got {0})")]
    Dropout(f64),
}

/// Bounds on what a configuration may ask for: far above any network this crate is meant for
/// (Ho et al.'s 35.7 M-parameter CIFAR-10 net has 128 base channels and multipliers up to 2), low
/// enough that a typo or a hostile `config.json` cannot ask for terabytes.
const MAX_IMAGE_CHANNELS: usize = 4;
const MAX_IMAGE_SIZE: usize = 256;
const MAX_BASE_CHANNELS: usize = 512;
const MAX_CHANNEL_MULT: usize = 8;
const MAX_LEVELS: usize = 6;
const MAX_RES_BLOCKS: usize = 8;

impl UNetConfig {
    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<(), UNetConfigError> {
        for (name, v) in [
            ("image_channels", self.image_channels),
            ("base_channels", self.base_channels),
            ("res_blocks", self.res_blocks),
            ("groups", self.groups),
            ("channel_mult", self.channel_mult.len()),
        ] {
            if v == 0 {
                return Err(UNetConfigError::Zero(name));
            }
        }
        if self.channel_mult.contains(&0) {
            return Err(UNetConfigError::Zero("channel_mult"));
        }
        if self.num_classes == Some(0) {
            return Err(UNetConfigError::Zero("num_classes"));
        }
        for (name, value, max) in [
            ("image_channels", self.image_channels, MAX_IMAGE_CHANNELS),
            ("image_size", self.image_size, MAX_IMAGE_SIZE),
            ("base_channels", self.base_channels, MAX_BASE_CHANNELS),
            ("channel_mult levels", self.channel_mult.len(), MAX_LEVELS),
            (
                "channel_mult",
                self.channel_mult.iter().copied().max().unwrap_or(0),
                MAX_CHANNEL_MULT,
            ),
            ("res_blocks", self.res_blocks, MAX_RES_BLOCKS),
            ("groups", self.groups, self.base_channels),
            ("num_classes", self.num_classes.unwrap_or(0), MAX_CLASSES),
        ] {
            if value > max {
                return Err(UNetConfigError::TooLarge { name, value, max });
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(UNetConfigError::Dropout(self.dropout));
        }
        if self.image_size == 0 || !self.image_size.is_multiple_of(1 << (self.channel_mult.len() - 1)) {
            return Err(UNetConfigError::TooSmall {
                size: self.image_size,
                levels: self.channel_mult.len(),
            });
        }
        let levels: Vec<usize> = (0..self.channel_mult.len()).map(|i| self.level_resolution(i)).collect();
        if let Some(&resolution) = self
            .attention_resolutions
            .iter()
            .flatten()
            .find(|r| !levels.contains(r))
        {
            return Err(UNetConfigError::AttentionResolution { resolution, levels });
        }
        Ok(())
    }
}
