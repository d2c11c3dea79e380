//! Named networks for the image shapes people train on: `--preset mnist` (this crate's digits
//! net) and `--preset cifar10` (Ho et al.'s 32 × 32 colour net).

use super::unet::{SkipLayout, UNetConfig};
use serde::{Deserialize, Serialize};

/// A named U-Net shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// 28 × 28 grey: 32 channels, multipliers 1, 2, 2, two ResBlocks per level, attention at 7 × 7
    /// (1.20 M parameters; the shipped digits model has this shape with one ResBlock).
    Mnist,
    /// Ho et al.'s CIFAR-10 net (their Appendix B, `diffusion_tf` `unet.py`): 32 × 32 RGB, 128
    /// channels, multipliers 1, 2, 2, 2, two ResBlocks per level with their skips, attention at
    /// 16 × 16, 32 GroupNorm groups, dropout 0.1 (35.7 M parameters).
    Cifar10,
}

impl Preset {
    /// The network.
    pub fn unet(self) -> UNetConfig {
        match self {
            Preset::Mnist => UNetConfig::new(),
            Preset::Cifar10 => UNetConfig::new()
                .with_image_channels(3)
                .with_image_size(32)
                .with_base_channels(128)
                .with_channel_mult(vec![1, 2, 2, 2])
                .with_res_blocks(2)
                .with_groups(32)
                .with_dropout(0.1)
                .with_skips(Some(SkipLayout::PerBlock))
                .with_attention_resolutions(Some(vec![16])),
        }
    }
}
