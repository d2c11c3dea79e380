//! The ε-predicting U-Net (Ho et al. 2020, Appendix B, scaled down for 28×28 digits).

use super::blocks::{AttentionBlock, AttentionBlockConfig, Downsample, ResBlock, ResBlockConfig, Upsample, group_norm};
use super::embedding::{ClassEmbedding, ClassEmbeddingConfig, TimeEmbedding, TimeEmbeddingConfig};
use crate::diffusion::sampler::{ConditionalEpsModel, EpsModel};
use crate::kernels::norm_silu::norm_silu;
use crate::kernels::same_conv::conv_forward;
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, Initializer, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// Which encoder activations the decoder receives (concatenated before a decoder ResBlock).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "native", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum SkipLayout {
    /// One skip per level, the level's output before its downsampler, taken by the first of the
    /// decoder level's `res_blocks` ResBlocks.
    #[default]
    PerLevel,
    /// Ho et al.'s layout (their `diffusion_tf/models/unet.py`): a skip from the input convolution,
    /// from every encoder ResBlock and from every downsampler, each taken by one of the decoder
    /// level's `res_blocks + 1` ResBlocks.
    PerBlock,
}

/// Configuration of [`UNet`]; saved as `config.json` beside the weights.
#[derive(Config, Debug, PartialEq)]
pub struct UNetConfig {
    /// Channels of the images (1 for MNIST).
    #[config(default = 1)]
    pub image_channels: usize,
    /// Height and width of the images.
    #[config(default = 28)]
    pub image_size: usize,
    /// Channels at full resolution.
    #[config(default = 32)]
    pub base_channels: usize,
    /// Channel multiplier of each resolution level; the resolution halves between levels.
    #[config(default = "vec![1, 2, 2]")]
    pub channel_mult: Vec<usize>,
    /// Residual blocks per level.
    #[config(default = 2)]
    pub res_blocks: usize,
    /// GroupNorm groups.
    #[config(default = 8)]
    pub groups: usize,
    /// Dropout inside residual blocks (active only while training).
    #[config(default = 0.1)]
    pub dropout: f64,
    /// The skip connections; `None` (a `config.json` written before the choice existed) is
    /// [`SkipLayout::PerLevel`].
    pub skips: Option<SkipLayout>,
    /// Class-conditional models: the number of classes. The class embedding then has
    /// `num_classes + 1` rows, the last being "no class" (∅, for classifier-free guidance);
    /// `None` (every model trained before conditioning existed): unconditional, no embedding.
    pub num_classes: Option<usize>,
    /// Where self-attention sits besides the bottleneck: `Some(resolutions)` puts an attention
    /// block after every ResBlock of each level whose resolution is listed (Ho et al.'s
    /// `attn_resolutions`, e.g. `[16]` for their 32 × 32 CIFAR-10 net); `None` (every model before
    /// the choice existed): one attention block at the lowest level, after its ResBlocks.
    pub attention_resolutions: Option<Vec<usize>>,
}

/// The most classes a conditional model may have (a bound on what a `config.json` can ask for).
pub const MAX_CLASSES: usize = 1000;

/// One encoder level: residual blocks, attention (after every block at the resolutions a config
/// names, or once at the lowest level), then a downsampler (except on the last level).
#[derive(Module, Debug)]
pub struct DownLevel {
    res: Vec<ResBlock>,
    /// [`UNetConfig::attention_resolutions`]: one per ResBlock at a named resolution, else none.
    block_attn: Vec<AttentionBlock>,
    attn: Option<AttentionBlock>,
    downsample: Option<Downsample>,
}

/// One decoder level: residual blocks that take the encoder's skips (the first block, or every
/// block: [`SkipLayout`]), then attention at the lowest resolution and an upsampler (except on the
/// full-resolution level).
#[derive(Module, Debug)]
pub struct UpLevel {
    res: Vec<ResBlock>,
    /// [`UNetConfig::attention_resolutions`]: one per ResBlock at a named resolution, else none.
    block_attn: Vec<AttentionBlock>,
    attn: Option<AttentionBlock>,
    upsample: Option<Upsample>,
}

/// The bottleneck: ResBlock → attention → ResBlock.
#[derive(Module, Debug)]
pub struct MidBlock {
    res1: ResBlock,
    attn: AttentionBlock,
    res2: ResBlock,
}

/// The noise-prediction network ε_θ(x_t, t).
#[derive(Module, Debug)]
pub struct UNet {
    time_embed: TimeEmbedding,
    /// Class-conditional models only: added to the time embedding.
    class_embed: Option<ClassEmbedding>,
    conv_in: Conv2d,
    down: Vec<DownLevel>,
    mid: MidBlock,
    /// Decoder levels, deepest first.
    up: Vec<UpLevel>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    /// [`SkipLayout::PerBlock`]: every decoder block takes a skip (no weights: burn stores nothing
    /// for a `bool`).
    skip_per_block: bool,
}

impl UNetConfig {
    /// Channels of each level.
    pub fn level_channels(&self) -> Vec<usize> {
        self.channel_mult.iter().map(|m| m * self.base_channels).collect()
    }

    /// The skip layout ([`SkipLayout::PerLevel`] when unset).
    pub fn skip_layout(&self) -> SkipLayout {
        self.skips.unwrap_or_default()
    }

    /// The resolution (height and width) of level `level`: the image size halved `level` times.
    pub fn level_resolution(&self, level: usize) -> usize {
        self.image_size >> level
    }

    /// Whether level `level` has an attention block after every ResBlock, and whether it has one
    /// after all of them (the layout before [`Self::attention_resolutions`]: the lowest level only).
    fn level_attention(&self, level: usize) -> (bool, bool) {
        match &self.attention_resolutions {
            Some(at) => (at.contains(&self.level_resolution(level)), false),
            None => (false, level + 1 == self.channel_mult.len()),
        }
    }

    /// Size of the time embedding (4 × base channels, as in DDPM).
    pub fn embed_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// Initialises the network on `device`.
    ///
    /// # Panics
    /// If the configuration is invalid ([`Self::validate`] says why).
    pub fn init(&self, device: &Device) -> UNet {
        if let Err(e) = self.validate() {
            panic!("invalid U-Net configuration: {e}");
        }
        let channels = self.level_channels();
        let levels = channels.len();
        let embed_dim = self.embed_dim();
        let res = |c_in: usize, c_out: usize| {
            ResBlockConfig::new(c_in, c_out, embed_dim)
                .with_groups(self.groups)
                .with_dropout(self.dropout)
                .init(device)
        };
        let attn = |c: usize| AttentionBlockConfig::new(c).with_groups(self.groups).init(device);
        let per_block = self.skip_layout() == SkipLayout::PerBlock;

        let mut down = Vec::with_capacity(levels);
        // Channels of the skips, in the order the encoder makes them (per block: the input
        // convolution's first).
        let mut skips = if per_block {
            vec![self.base_channels]
        } else {
            Vec::new()
        };
        let mut c_prev = self.base_channels;
        for (i, &c) in channels.iter().enumerate() {
            let last = i + 1 == levels;
            let (every_block, once) = self.level_attention(i);
            down.push(DownLevel {
                res: (0..self.res_blocks)
                    .map(|j| res(if j == 0 { c_prev } else { c }, c))
                    .collect(),
                block_attn: (0..self.res_blocks).filter(|_| every_block).map(|_| attn(c)).collect(),
                attn: once.then(|| attn(c)),
                downsample: (!last).then(|| Downsample::new(c, device)),
            });
            // Per block: one skip per ResBlock and one from the downsampler; per level: one.
            let made = if !per_block {
                1
            } else if last {
                self.res_blocks
            } else {
                self.res_blocks + 1
            };
            skips.extend(std::iter::repeat_n(c, made));
            c_prev = c;
        }
        let c_mid = *channels.last().expect("at least one level");
        let mid = MidBlock {
            res1: res(c_mid, c_mid),
            attn: attn(c_mid),
            res2: res(c_mid, c_mid),
        };
        let mut up = Vec::with_capacity(levels);
        let mut c_h = c_mid;
        let blocks = self.res_blocks + usize::from(per_block);
        for (i, &c) in channels.iter().enumerate().rev() {
            let (every_block, once) = self.level_attention(i);
            up.push(UpLevel {
                res: (0..blocks)
                    .map(|j| {
                        let c_in = if j == 0 { c_h } else { c };
                        let takes_skip = per_block || j == 0;
                        let c_skip = if takes_skip {
                            skips.pop().expect("a skip for this block")
                        } else {
                            0
                        };
                        res(c_in + c_skip, c)
                    })
                    .collect(),
                block_attn: (0..blocks).filter(|_| every_block).map(|_| attn(c)).collect(),
                attn: once.then(|| attn(c)),
                upsample: (i > 0).then(|| Upsample::new(c, device)),
            });
            c_h = c;
        }
        UNet {
            time_embed: TimeEmbeddingConfig::new(self.base_channels, embed_dim).init(device),
            class_embed: self
                .num_classes
                .map(|n| ClassEmbeddingConfig::new(n, embed_dim).init(device)),
            conv_in: Conv2dConfig::new([self.image_channels, self.base_channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device),
            down,
            mid,
            up,
            norm_out: group_norm(self.groups, channels[0], device),
            conv_out: Conv2dConfig::new([channels[0], self.image_channels], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_initializer(Initializer::Zeros)
                .init(device),
            skip_per_block: per_block,
        }
    }
}

impl UNet {
    /// Predicts the noise in `x_t`, unconditionally (a conditional model is given "no class").
    ///
    /// # Shapes
    /// - `x_t`: `[batch, image_channels, image_size, image_size]`
    /// - `t`: `batch` timesteps
    /// - output: `[batch, image_channels, image_size, image_size]`
    pub fn forward(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        self.forward_classes(x_t, t, None)
    }

    /// The number of classes of a class-conditional model (`None`: unconditional).
    pub fn num_classes(&self) -> Option<usize> {
        self.class_embed.as_ref().map(ClassEmbedding::num_classes)
    }

    /// This network made class-conditional with `num_classes` classes, its class embedding all
    /// zeros: until trained, it predicts exactly what it did before for every class (the way a
    /// conditional model starts from unconditional weights). `device` must be the one the network
    /// was built on (for training, the autodiff device: a table made elsewhere would not learn).
    pub fn with_zero_class_embedding(mut self, num_classes: usize, device: &Device) -> Self {
        let embed_dim = self.time_embed.embed_dim();
        self.class_embed = Some(
            ClassEmbeddingConfig::new(num_classes, embed_dim)
                .with_zero_init(true)
                .init(device),
        );
        self
    }

    /// The network with every weight frozen (no gradient, so no optimiser step moves it) but the
    /// class embedding's table: training it learns the classes while the model given no class
    /// stays exactly the network it was (a conditional model grown from unconditional weights
    /// keeps their samples as its ∅ path). An unconditional network is returned frozen whole.
    pub fn frozen_but_class_embedding(self) -> Self {
        let mut frozen = self.no_grad();
        frozen.class_embed = frozen.class_embed.map(|c| c.set_require_grad(true));
        frozen
    }

    /// The class embedding, in class-conditional models.
    pub fn class_embedding(&self) -> Option<&ClassEmbedding> {
        self.class_embed.as_ref()
    }

    /// Predicts the noise in `x_t` given each image's class: `classes[i]` is `Some(c)` for class c
    /// or `None` for "no class" (∅); `classes = None` is ∅ for every image. An unconditional
    /// model ignores the classes.
    ///
    /// # Panics
    /// If `classes` has another length than the batch, or names a class ≥ `num_classes`.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, image_channels, image_size, image_size]`
    /// - `t`, `classes`: `batch` entries each
    /// - output: `[batch, image_channels, image_size, image_size]`
    pub fn forward_classes(&self, x_t: Tensor<4>, t: &[usize], classes: Option<&[Option<usize>]>) -> Tensor<4> {
        let device = x_t.device();
        let mut emb = self.time_embed.forward(t, &device); // [b, embed_dim]
        if let Some(class_embed) = &self.class_embed {
            let null = vec![None; t.len()];
            emb = emb + class_embed.forward(classes.unwrap_or(&null), &device); // [b, embed_dim]
        }
        let mut h = conv_forward(&self.conv_in, x_t); // [b, c0, s, s]
        let mut skips = Vec::new();
        if self.skip_per_block {
            skips.push(h.clone());
        }
        for level in &self.down {
            let blocks = level.res.len();
            for (j, block) in level.res.iter().enumerate() {
                h = block.forward(h, emb.clone()); // [b, c_i, s_i, s_i]
                if let Some(attn) = level.block_attn.get(j) {
                    h = attn.forward(h); // [b, c_i, s_i, s_i]
                }
                if j + 1 == blocks
                    && let Some(attn) = &level.attn
                {
                    h = attn.forward(h); // [b, c_i, s_i, s_i]
                }
                if self.skip_per_block || j + 1 == blocks {
                    skips.push(h.clone());
                }
            }
            if let Some(down) = &level.downsample {
                h = down.forward(h); // [b, c_i, s_i/2, s_i/2]
                if self.skip_per_block {
                    skips.push(h.clone());
                }
            }
        }
        h = self.mid.res1.forward(h, emb.clone()); // [b, c_L, s_L, s_L]
        h = self.mid.attn.forward(h); // [b, c_L, s_L, s_L]
        h = self.mid.res2.forward(h, emb.clone()); // [b, c_L, s_L, s_L]
        for level in &self.up {
            for (j, block) in level.res.iter().enumerate() {
                if self.skip_per_block || j == 0 {
                    let skip = skips.pop().expect("a skip for this block"); // [b, c_skip, s_i, s_i]
                    h = Tensor::cat(vec![h, skip], 1); // [b, c_h + c_skip, s_i, s_i]
                }
                h = block.forward(h, emb.clone()); // [b, c_i, s_i, s_i]
                if let Some(attn) = level.block_attn.get(j) {
                    h = attn.forward(h); // [b, c_i, s_i, s_i]
                }
            }
            if let Some(attn) = &level.attn {
                h = attn.forward(h); // [b, c_i, s_i, s_i]
            }
            if let Some(up) = &level.upsample {
                h = up.forward(h); // [b, c_i, 2 s_i, 2 s_i]
            }
        }
        let h = norm_silu(&self.norm_out, h); // [b, c0, s, s]
        conv_forward(&self.conv_out, h) // [b, image_channels, s, s]
    }
}

/// The U-Net is the ε-predictor the samplers run (the samplers know nothing of the network: the
/// trait lives with them, its implementation here).
impl EpsModel for UNet {
    fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        self.forward(x_t, t)
    }
}

/// The U-Net, asked for a class (the network knows nothing of guidance).
impl ConditionalEpsModel for UNet {
    fn num_classes(&self) -> Option<usize> {
        UNet::num_classes(self)
    }

    fn predict_eps_given(&self, x_t: Tensor<4>, t: &[usize], classes: &[Option<usize>]) -> Tensor<4> {
        self.forward_classes(x_t, t, Some(classes))
    }
}
