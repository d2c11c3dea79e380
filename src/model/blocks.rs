//! The U-Net's building blocks: residual blocks with time injection, self-attention, and the
//! resampling layers.

use crate::kernels::down_conv::down_conv_forward;
use crate::kernels::dropout::dropout;
use crate::kernels::norm_silu::norm_silu;
use crate::kernels::same_conv::conv_forward;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Initializer, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

/// A 3×3 convolution with "same" padding.
fn conv3x3(channels_in: usize, channels_out: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([channels_in, channels_out], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// A convolution whose weights start at zero, so the block it ends starts as the identity
/// (the residual branch contributes nothing until trained), as in Ho et al.'s implementation.
fn zero_conv(channels_in: usize, channels_out: usize, kernel: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new([channels_in, channels_out], [kernel, kernel])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_initializer(Initializer::Zeros)
        .init(device)
}

/// Group normalisation with `groups` groups (or fewer, when `channels` is small).
pub fn group_norm(groups: usize, channels: usize, device: &Device) -> GroupNorm {
    let mut g = groups.min(channels);
    while !channels.is_multiple_of(g) {
        g -= 1;
    }
    GroupNormConfig::new(g, channels).init(device)
}

/// Configuration of [`ResBlock`].
#[derive(Config, Debug)]
pub struct ResBlockConfig {
    /// Input channels.
    pub channels_in: usize,
    /// Output channels.
    pub channels_out: usize,
    /// Size of the time embedding.
    pub embed_dim: usize,
    /// GroupNorm groups.
    #[config(default = 8)]
    pub groups: usize,
    /// Dropout before the second convolution.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// GroupNorm → SiLU → conv → + time → GroupNorm → SiLU → dropout → conv, plus a skip (1×1 conv
/// when the channel count changes).
#[derive(Module, Debug)]
pub struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_proj: Linear,
    norm2: GroupNorm,
    dropout: Dropout,
    conv2: Conv2d,
    skip: Option<Conv2d>,
}

impl ResBlockConfig {
    /// Initialises the block on `device`.
    pub fn init(&self, device: &Device) -> ResBlock {
        ResBlock {
            norm1: group_norm(self.groups, self.channels_in, device),
            conv1: conv3x3(self.channels_in, self.channels_out, device),
            time_proj: LinearConfig::new(self.embed_dim, self.channels_out).init(device),
            norm2: group_norm(self.groups, self.channels_out, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            conv2: zero_conv(self.channels_out, self.channels_out, 3, device),
            skip: (self.channels_in != self.channels_out)
                .then(|| Conv2dConfig::new([self.channels_in, self.channels_out], [1, 1]).init(device)),
        }
    }
}

impl ResBlock {
    /// # Shapes
    /// - `x`: `[batch, channels_in, h, w]`, `emb`: `[batch, embed_dim]`
    /// - output: `[batch, channels_out, h, w]`
    pub fn forward(&self, x: Tensor<4>, emb: Tensor<2>) -> Tensor<4> {
        let h = conv_forward(&self.conv1, norm_silu(&self.norm1, x.clone())); // [b, out, h, w]
        let [b, c, _, _] = h.dims();
        let t = self.time_proj.forward(silu(emb)).reshape([b, c, 1, 1]); // [b, out, 1, 1]
        let h = h + t; // [b, out, h, w]
        let h = dropout(&self.dropout, norm_silu(&self.norm2, h)); // [b, out, h, w]
        let h = conv_forward(&self.conv2, h); // [b, out, h, w]
        let skip = match &self.skip {
            Some(conv) => conv_forward(conv, x), // [b, out, h, w]
            None => x,
        };
        skip + h // [b, out, h, w]
    }
}

/// Configuration of [`AttentionBlock`].
#[derive(Config, Debug)]
pub struct AttentionBlockConfig {
    /// Channels (also the attention width).
    pub channels: usize,
    /// GroupNorm groups.
    #[config(default = 8)]
    pub groups: usize,
}

/// Single-head self-attention over all pixels, with a residual connection (Ho et al. use it at
/// 16×16; here at the lowest resolution).
#[derive(Module, Debug)]
pub struct AttentionBlock {
    norm: GroupNorm,
    qkv: Conv2d,
    proj: Conv2d,
    channels: usize,
}

impl AttentionBlockConfig {
    /// Initialises the block on `device`.
    pub fn init(&self, device: &Device) -> AttentionBlock {
        AttentionBlock {
            norm: group_norm(self.groups, self.channels, device),
            qkv: Conv2dConfig::new([self.channels, 3 * self.channels], [1, 1]).init(device),
            proj: zero_conv(self.channels, self.channels, 1, device),
            channels: self.channels,
        }
    }
}

impl AttentionBlock {
    /// # Shapes
    /// - `x`: `[batch, channels, h, w]`
    /// - output: `[batch, channels, h, w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, height, width] = x.dims();
        let n = height * width;
        let qkv = conv_forward(&self.qkv, self.norm.forward(x.clone())).reshape([b, 3 * c, n]); // [b, 3c, n]
        let q = qkv.clone().narrow(1, 0, c); // [b, c, n]
        let k = qkv.clone().narrow(1, c, c); // [b, c, n]
        let v = qkv.narrow(1, 2 * c, c); // [b, c, n]
        let scores = q.swap_dims(1, 2).matmul(k).div_scalar((self.channels as f64).sqrt()); // [b, n, n]
        let weights = softmax(scores, 2); // [b, n(query), n(key)]
        let out = v.matmul(weights.swap_dims(1, 2)); // [b, c, n(query)]
        let out = conv_forward(&self.proj, out.reshape([b, c, height, width])); // [b, c, h, w]
        x + out // [b, c, h, w]
    }
}

/// Halves the resolution with a stride-2 3×3 convolution (28 → 14 → 7).
#[derive(Module, Debug)]
pub struct Downsample {
    conv: Conv2d,
}

impl Downsample {
    /// A downsampler for `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        let conv = Conv2dConfig::new([channels, channels], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device);
        Self { conv }
    }

    /// # Shapes
    /// - `x`: `[batch, c, h, w]` → `[batch, c, ⌈h/2⌉, ⌈w/2⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        down_conv_forward(&self.conv, x) // [b, c, ⌈h/2⌉, ⌈w/2⌉]
    }
}

/// Doubles the resolution by nearest-neighbour repetition, then a 3×3 convolution.
#[derive(Module, Debug)]
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// An upsampler for `channels` channels.
    pub fn new(channels: usize, device: &Device) -> Self {
        Self {
            conv: conv3x3(channels, channels, device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, c, h, w]` → `[batch, c, 2h, 2w]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let nearest = InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]);
        let x = interpolate(x, nearest); // [b, c, 2h, 2w]
        conv_forward(&self.conv, x) // [b, c, 2h, 2w]
    }
}
