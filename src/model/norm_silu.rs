//! GroupNorm followed by SiLU — the opening of every ResBlock and the U-Net's output head — as one
//! backend operation.
//!
//! Composed from tensor ops, y = silu(γ · (x − μ_g)/√(σ²_g + ε) + β) is about ten passes over the
//! activations (mean, subtract, square, mean, add, sqrt, divide, scale, shift, sigmoid, multiply),
//! each allocating its result, and the sigmoid calls the scalar `expf`. On burn's CPU backend
//! (flex) [`NormSiluBackend`] does it in two passes per group: one for the statistics, one that
//! writes the activation through a branch-free exponential the compiler vectorises (SSE/AVX
//! natively, simd128 in the browser). Other backends compose the same arithmetic from tensor ops.
//! Inference only: [`norm_silu`] composes burn's own modules whenever gradients are being recorded.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, Scalar, TensorMetadata, backend_extension};
use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor, TensorData};

/// Backends that can run GroupNorm + SiLU as one operation.
#[backend_extension(Flex, Cube: cfg(any(feature = "native", target_family = "wasm")))]
pub trait NormSiluBackend: Backend {
    /// silu(GroupNorm(x)) with `groups` groups, per-channel `gamma` and `beta`, and `epsilon`.
    ///
    /// # Shapes
    /// - `x` and the output: `[batch, channels, height, width]`
    /// - `gamma`, `beta`: `[channels]`
    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        composed::<Self>(x, gamma, beta, groups, epsilon)
    }
}

/// The operation composed from a backend's tensor ops, as burn's `GroupNorm` and `silu` compute it.
pub fn composed<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    groups: usize,
    epsilon: f64,
) -> FloatTensor<B> {
    let shape = x.shape();
    let (batch, channels) = (shape[0], shape[1]);
    let per_group = shape.num_elements() / (batch * groups);
    let x = B::float_reshape(x, [batch, groups, per_group].into()); // [b, g, n]
    let mean = B::float_mean_dim(x.clone(), 2); // [b, g, 1]
    let centred = B::float_sub(x, mean); // [b, g, n]
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 2); // [b, g, 1]
    let std = B::float_sqrt(B::float_add_scalar(var, Scalar::from(epsilon))); // [b, g, 1]
    let normalised = B::float_reshape(B::float_div(centred, std), shape.clone()); // [b, c, h, w]
    let gamma = B::float_reshape(gamma, [1, channels, 1, 1].into()); // [1, c, 1, 1]
    let beta = B::float_reshape(beta, [1, channels, 1, 1].into()); // [1, c, 1, 1]
    let y = B::float_add(B::float_mul(normalised, gamma), beta); // [b, c, h, w]
    B::float_mul(y.clone(), B::sigmoid(y)) // [b, c, h, w]
}

/// e^x for x ≤ 0 without branches or library calls, so loops over it vectorise: x = n ln 2 + r with
/// |r| ≤ ln 2 / 2 (ln 2 split in two parts, Cody & Waite, so r keeps its precision), e^r by its
/// degree-6 Taylor polynomial (truncation error < 2e-7 there), and 2^n put straight into the
/// exponent bits. Inputs below −87 (where e^x < 2^−126) are clamped there.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4; // exactly 0.693359375: n · LN2_HI is exact for |n| < 2^14
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    // Rounds to the nearest integer by adding and removing 1.5 · 2^23 (exact for |v| < 2^22);
    // `f32::round` is a library call that would stop the loop from vectorising.
    const ROUND: f32 = 12_582_912.0;
    let x = x.max(-87.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // n as an integer without a float-to-int cast (Rust's saturating cast keeps the loop scalar):
    // ROUND + n has ROUND's exponent, so its bits are ROUND's plus n.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// silu(y) = y · σ(y), with σ(y) = 1/(1 + e^−y) for y ≥ 0 and e^y/(1 + e^y) below, so the
/// exponential only ever sees y ≤ 0 and cannot overflow.
#[inline(always)]
fn silu_f32(y: f32) -> f32 {
    let e = exp_nonpositive(-y.abs());
    let sigmoid = if y >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
    y * sigmoid
}

/// Σ f(v) over `values`, in eight interleaved partial sums so the compiler can vectorise it (one
/// running sum must add in order, which keeps a loop scalar).
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let rest: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// One group of one image: its values, channel after channel, and those channels' γ and β.
struct Group<'a> {
    input: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    per_channel: usize,
    epsilon: f64,
}

impl Group<'_> {
    /// Writes silu(γ (x − μ)/σ + β) of the group into `output`, with the widest vectors the CPU has.
    fn normalise_silu(&self, output: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA, checked just above.
            return unsafe { self.normalise_silu_avx2(output) };
        }
        self.normalise_silu_portable(output)
    }

    /// [`Self::normalise_silu_portable`] compiled for AVX2 (8 floats per vector instead of SSE's 4).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn normalise_silu_avx2(&self, output: &mut [f32]) {
        self.normalise_silu_portable(output)
    }

    #[inline(always)]
    fn normalise_silu_portable(&self, output: &mut [f32]) {
        let n = self.input.len() as f64;
        // Statistics in f64: two passes, mean then the mean squared deviation.
        let mean = lane_sum(self.input, |v| v as f64) / n;
        let var = lane_sum(self.input, |v| (v as f64 - mean).powi(2)) / n;
        let inv_std = 1.0 / (var + self.epsilon).sqrt();
        for (c, (input, output)) in self
            .input
            .chunks_exact(self.per_channel)
            .zip(output.chunks_exact_mut(self.per_channel))
            .enumerate()
        {
            // γ (x − μ)/σ + β as one multiply-add per element.
            let scale = (self.gamma[c] as f64 * inv_std) as f32;
            let shift = (self.beta[c] as f64 - mean * self.gamma[c] as f64 * inv_std) as f32;
            for (o, &v) in output.iter_mut().zip(input) {
                *o = silu_f32(v * scale + shift);
            }
        }
    }
}

impl NormSiluBackend for Flex {
    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if [&x, &gamma, &beta].iter().any(|t| t.dtype() != DType::F32) {
            return composed::<Self>(x, gamma, beta, groups, epsilon);
        }
        let shape = x.layout().shape().clone();
        let (x, gamma, beta) = (x.to_contiguous(), gamma.to_contiguous(), beta.to_contiguous());
        let (x, gamma, beta) = (
            x.as_slice::<f32>().expect("contiguous f32"),
            gamma.as_slice::<f32>().expect("contiguous f32"),
            beta.as_slice::<f32>().expect("contiguous f32"),
        );
        let channels = shape[1];
        let per_channel = shape.num_elements() / (shape[0] * channels);
        let channels_per_group = channels / groups;
        let group_len = channels_per_group * per_channel;
        let mut out = vec![0.0f32; x.len()];
        // Group `index` of the batch (groups of every image, one after another).
        let normalise = |(index, (input, output)): (usize, (&[f32], &mut [f32]))| {
            let first_channel = (index % groups) * channels_per_group;
            let channels = first_channel..first_channel + channels_per_group;
            let group = Group {
                input,
                gamma: &gamma[channels.clone()],
                beta: &beta[channels],
                per_channel,
                epsilon,
            };
            group.normalise_silu(output);
        };
        #[cfg(feature = "native")]
        {
            use rayon::prelude::*;
            x.par_chunks_exact(group_len)
                .zip(out.par_chunks_exact_mut(group_len))
                .enumerate()
                .for_each(normalise);
        }
        #[cfg(not(feature = "native"))]
        x.chunks_exact(group_len)
            .zip(out.chunks_exact_mut(group_len))
            .enumerate()
            .for_each(normalise);
        burn::backend::flex::FlexTensor::from_data(TensorData::new(out, shape))
    }
}

#[cfg(any(feature = "native", target_family = "wasm"))]
impl NormSiluBackend for burn::backend::wgpu::CubeBackend {}

/// silu(norm(x)): the fused operation when no gradient is being recorded, burn's modules otherwise.
///
/// # Shapes
/// - `x` and the output: `[batch, channels, height, width]`
pub fn norm_silu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return silu(norm.forward(x));
    };
    if x.device().is_autodiff() {
        return silu(norm.forward(x));
    }
    let y = burn::backend::Dispatch::group_norm_silu(
        x.into_dispatch(),
        gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        norm.num_groups,
        norm.epsilon,
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::blocks::group_norm;
    use crate::rng::NoiseRng;
    use burn::module::Param;
    use burn::tensor::Device;

    #[test]
    fn the_exponential_is_accurate_where_silu_uses_it() {
        // Within a few f32 roundings (2^-24 ≈ 6e-8 each) of e^x in f64, from 0 down to −87.
        for i in 0..=1740 {
            let x = -(i as f32) * 0.05;
            let (got, want) = (exp_nonpositive(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 4e-7 * want, "e^{x}: {got} vs {want}");
        }
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn the_fused_operation_equals_group_norm_then_silu() {
        let device = Device::flex();
        let mut rng = NoiseRng::new(3);
        // 32 channels in 8 groups, random affine parameters, inputs with an offset and a spread
        // (as activations have); and a 3-channel case where the groups fall back to 3.
        for (channels, groups) in [(32usize, 8usize), (3, 8)] {
            let mut norm = group_norm(groups, channels, &device);
            let values = |rng: &mut NoiseRng, n: usize, scale: f64, offset: f64| {
                (0..n)
                    .map(|_| (rng.normal() * scale + offset) as f32)
                    .collect::<Vec<_>>()
            };
            norm.gamma = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(values(&mut rng, channels, 0.5, 1.0), [channels]),
                &device,
            )));
            norm.beta = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(values(&mut rng, channels, 0.5, 0.0), [channels]),
                &device,
            )));
            let shape = [2, channels, 7, 5];
            let x = Tensor::<4>::from_data(
                TensorData::new(values(&mut rng, 2 * channels * 35, 3.0, 1.5), shape),
                &device,
            );
            let fused = norm_silu(&norm, x.clone()).into_data();
            let reference = silu(norm.forward(x)).into_data();
            let (fused, reference) = (fused.as_slice::<f32>().unwrap(), reference.as_slice::<f32>().unwrap());
            for (f, r) in fused.iter().zip(reference) {
                assert!(
                    (f - r).abs() <= 2e-6 * (1.0 + r.abs()),
                    "{f} vs {r} ({channels} channels)"
                );
            }
        }
    }
}
