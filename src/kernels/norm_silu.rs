//! GroupNorm followed by SiLU — the opening of every ResBlock and the U-Net's output head — as one
//! backend operation.
//!
//! Composed from tensor ops, y = silu(γ · (x − μ_g)/√(σ²_g + ε) + β) is about ten passes over the
//! activations (mean, subtract, square, mean, add, sqrt, divide, scale, shift, sigmoid, multiply),
//! each allocating its result, and the sigmoid calls the scalar `expf`. On burn's CPU backend
//! (flex) [`NormSiluBackend`] does it in two passes per group: one for the statistics, one that
//! writes the activation through a branch-free exponential the compiler vectorises (SSE/AVX
//! natively, simd128 in the browser). Its backward (∂x, ∂γ, ∂β) is two passes per group too, and
//! under autodiff (natively) the forward records it. Other backends compose the same arithmetic
//! from tensor ops ([`composed`], [`composed_backward`]).

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, Scalar, TensorMetadata, backend_extension};
use burn::nn::GroupNorm;
use burn::tensor::activation::silu;
use burn::tensor::{DType, Tensor, TensorData};

#[cfg(target_arch = "x86_64")]
use super::cpu_vectors::{X86Vectors, x86_vectors};

/// Backends that can run GroupNorm + SiLU as one operation.
#[backend_extension(Flex, Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff: cfg(feature = "native"))]
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

    /// The gradients (∂L/∂x, ∂L/∂γ, ∂L/∂β) of [`Self::group_norm_silu`], given `grad` = ∂L/∂output.
    ///
    /// # Shapes
    /// - `x`, `grad` and ∂L/∂x: `[batch, channels, height, width]`
    /// - `gamma`, `beta`, ∂L/∂γ and ∂L/∂β: `[channels]`
    fn group_norm_silu_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        composed_backward::<Self>(x, gamma, beta, grad, groups, epsilon)
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

/// The gradients of [`composed`] from a backend's tensor ops. With x̂ = (x − μ)/σ per group,
/// y = γ x̂ + β and out = y·s(y) (s the logistic sigmoid):
/// ∂L/∂y = g·(s + y·s·(1 − s)); ∂L/∂γ = Σ ∂L/∂y·x̂ and ∂L/∂β = Σ ∂L/∂y over batch and pixels;
/// with d = γ·∂L/∂y, ∂L/∂x = (d − mean_group(d) − x̂·mean_group(d·x̂))/σ.
pub fn composed_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    grad: FloatTensor<B>,
    groups: usize,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let (batch, channels) = (shape[0], shape[1]);
    let per_group = shape.num_elements() / (batch * groups);
    let grouped = [batch, groups, per_group];
    let x = B::float_reshape(x, grouped.into()); // [b, g, n]
    let mean = B::float_mean_dim(x.clone(), 2); // [b, g, 1]
    let centred = B::float_sub(x, mean); // [b, g, n]
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 2); // [b, g, 1]
    let std = B::float_sqrt(B::float_add_scalar(var, Scalar::from(epsilon))); // [b, g, 1]
    let x_hat = B::float_div(centred, std.clone()); // [b, g, n]
    let x_hat_image = B::float_reshape(x_hat.clone(), shape.clone()); // [b, c, h, w]
    let gamma = B::float_reshape(gamma, [1, channels, 1, 1].into()); // [1, c, 1, 1]
    let beta = B::float_reshape(beta, [1, channels, 1, 1].into()); // [1, c, 1, 1]
    let y = B::float_add(B::float_mul(x_hat_image.clone(), gamma.clone()), beta); // [b, c, h, w]
    let s = B::sigmoid(y.clone()); // [b, c, h, w]
    let one_minus_s = B::float_add_scalar(B::float_neg(s.clone()), Scalar::from(1.0)); // [b, c, h, w]
    let slope = B::float_add(s.clone(), B::float_mul(y, B::float_mul(s, one_minus_s))); // [b, c, h, w]
    let dy = B::float_mul(grad, slope); // [b, c, h, w]
    let per_channel = |t: FloatTensor<B>| {
        let t = B::float_sum_dim(B::float_sum_dim(B::float_sum_dim(t, 0), 2), 3); // [1, c, 1, 1]
        B::float_reshape(t, [channels].into()) // [c]
    };
    let d_gamma = per_channel(B::float_mul(dy.clone(), x_hat_image)); // [c]
    let d_beta = per_channel(dy.clone()); // [c]
    let d = B::float_reshape(B::float_mul(dy, gamma), grouped.into()); // [b, g, n]
    let mean_d = B::float_mean_dim(d.clone(), 2); // [b, g, 1]
    let mean_dx = B::float_mean_dim(B::float_mul(d.clone(), x_hat.clone()), 2); // [b, g, 1]
    let dx = B::float_sub(B::float_sub(d, mean_d), B::float_mul(x_hat, mean_dx)); // [b, g, n]
    let dx = B::float_reshape(B::float_div(dx, std), shape); // [b, c, h, w]
    (dx, d_gamma, d_beta)
}

/// The constants of e^x, σ and SiLU below, which the loops receive as values.
///
/// As literals they stay inside the loops in the browser: LLVM leaves a `v128.const` at each use
/// (for it a constant costs nothing to rebuild), and V8 rebuilds each at every iteration (several
/// instructions for 16 bytes). Loaded through `black_box` once, they are values that the loops
/// keep in registers: SiLU's loop in Chromium 3.3 → 2.3 ns an element, the same to the bit.
#[derive(Clone, Copy)]
struct Exp {
    /// Below this, e^x is taken at this (e^−87 < 2^−126 is below f32's normal range).
    floor: f32,
    log2_e: f32,
    /// ln 2 in two parts (Cody & Waite): `ln2_hi` is exactly 0.693359375, so n · `ln2_hi` is
    /// exact for |n| < 2^14; `ln2_lo` = ln 2 − `ln2_hi`.
    ln2_hi: f32,
    ln2_lo: f32,
    /// 1.5 · 2^23: adding and removing it rounds to the nearest integer (exact for |v| < 2^22);
    /// `f32::round` is a library call that would stop the loop from vectorising.
    round: f32,
    /// 1/k! for k = 0 … 6: e^r's Taylor polynomial.
    taylor: [f32; 7],
}

impl Exp {
    #[inline(always)]
    fn new() -> Self {
        std::hint::black_box(Self {
            floor: -87.0,
            log2_e: std::f32::consts::LOG2_E,
            ln2_hi: 0.693_359_4,
            ln2_lo: -2.121_944_4e-4,
            round: 12_582_912.0,
            taylor: [1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0],
        })
    }

    /// e^x for x ≤ 0 without branches or library calls, so loops over it vectorise: x = n ln 2 + r
    /// with |r| ≤ ln 2 / 2, e^r by its degree-6 Taylor polynomial (truncation error < 2e-7 there),
    /// and 2^n put straight into the exponent bits. Inputs below −87 are clamped there.
    ///
    /// The polynomial by Estrin's scheme, r² and r⁴ first and the pairs of terms beside them: its
    /// longest chain of dependent operations is half Horner's, which on the browser's 4-float
    /// vectors, where one element's steps wait on each other, is most of the time (SiLU's loop
    /// 2.3 → 2.0 ns an element in Chromium).
    #[inline(always)]
    fn exp_nonpositive(self, x: f32) -> f32 {
        // A comparison, not `f32::max`: in wasm `max` is a call to `fmaxf` per lane, which keeps
        // the loop scalar (a NaN gives NaN here where `max` gives −87; silu(NaN) is NaN either way).
        let x = if x < self.floor { self.floor } else { x };
        let shifted = x * self.log2_e + self.round;
        let n = shifted - self.round;
        let r = (x - n * self.ln2_hi) - n * self.ln2_lo;
        let [c0, c1, c2, c3, c4, c5, c6] = self.taylor;
        let r2 = r * r;
        let r4 = r2 * r2;
        let p = (c0 + c1 * r) + r2 * (c2 + c3 * r) + r4 * ((c4 + c5 * r) + c6 * r2);
        // n as an integer without a float-to-int cast (Rust's saturating cast keeps the loop
        // scalar): `shifted` has `round`'s exponent, so its bits are `round`'s plus n. 2^n's bits
        // are n + 127 shifted into the exponent, i.e. (n << 23) plus 1.0's bits.
        let n_bits = shifted.to_bits().wrapping_sub(self.round.to_bits());
        p * f32::from_bits((n_bits << 23).wrapping_add(c0.to_bits()))
    }

    /// σ(y) = 1/(1 + e^−y) for y ≥ 0 and e^y/(1 + e^y) below (the exponential sees y ≤ 0 only, so
    /// it cannot overflow).
    #[inline(always)]
    fn sigmoid(self, y: f32) -> f32 {
        let one = self.taylor[0];
        let e = self.exp_nonpositive(-y.abs());
        if y >= 0.0 { one / (one + e) } else { e / (one + e) }
    }

    /// silu(y) = y · σ(y).
    #[inline(always)]
    fn silu(self, y: f32) -> f32 {
        y * self.sigmoid(y)
    }
}

/// Σ f(v) over `values`, vectorisable: sixteen interleaved f32 partial sums (one running sum
/// must add in order, which keeps a loop scalar) over blocks of 256 values, each block's total
/// added in f64, so no f32 sum runs over more than 16 terms.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    const LANES: usize = 16;
    const BLOCK: usize = 16 * LANES;
    let blocks = values.chunks_exact(BLOCK);
    let mut total: f64 = blocks.remainder().iter().map(|&v| f(v) as f64).sum();
    for block in blocks {
        let mut lanes = [0.0f32; LANES];
        for chunk in block.chunks_exact(LANES) {
            for (lane, &v) in lanes.iter_mut().zip(chunk) {
                *lane += f(v);
            }
        }
        total += lanes.iter().map(|&l| l as f64).sum::<f64>();
    }
    total
}

/// How a `[batch, channels, height, width]` tensor falls into GroupNorm's groups (each image's
/// groups one after another, each group its channels' values in a row), with the affine γ and β.
struct GroupLayout<'a> {
    gamma: &'a [f32],
    beta: &'a [f32],
    groups: usize,
    channels_per_group: usize,
    per_channel: usize,
    epsilon: f64,
}

impl<'a> GroupLayout<'a> {
    fn new(shape: &burn::tensor::Shape, gamma: &'a [f32], beta: &'a [f32], groups: usize, epsilon: f64) -> Self {
        let channels = shape[1];
        Self {
            gamma,
            beta,
            groups,
            channels_per_group: channels / groups,
            per_channel: shape.num_elements() / (shape[0] * channels),
            epsilon,
        }
    }

    /// Values in one group.
    fn group_len(&self) -> usize {
        self.channels_per_group * self.per_channel
    }

    /// Group `index` of the batch, whose values are `input`.
    fn group<'b>(&self, index: usize, input: &'b [f32]) -> Group<'b>
    where
        'a: 'b,
    {
        let first = (index % self.groups) * self.channels_per_group;
        let channels = first..first + self.channels_per_group;
        Group {
            input,
            gamma: &self.gamma[channels.clone()],
            beta: &self.beta[channels],
            per_channel: self.per_channel,
            epsilon: self.epsilon,
        }
    }
}

/// One group of one image: its values, channel after channel, and those channels' γ and β.
struct Group<'a> {
    input: &'a [f32],
    gamma: &'a [f32],
    beta: &'a [f32],
    per_channel: usize,
    epsilon: f64,
}

/// One group's input, output gradient and input gradient, as the backward pass walks them.
type GroupSlices<'a> = ((&'a [f32], &'a [f32]), &'a mut [f32]);

/// What one group's backward pass gives: its share of ∂L/∂γ and ∂L/∂β, one value per channel of
/// the group.
struct GroupGradients {
    gamma: Vec<f64>,
    beta: Vec<f64>,
}

impl Group<'_> {
    /// μ and 1/σ of the group, in f64.
    #[inline(always)]
    fn statistics(&self) -> (f64, f64) {
        let n = self.input.len() as f64;
        let mean = lane_sum(self.input, |v| v) / n;
        // The deviations in f32 (their squares are summed as above, in f64 per block).
        let mean32 = mean as f32;
        let var = lane_sum(self.input, |v| (v - mean32) * (v - mean32)) / n;
        (mean, 1.0 / (var + self.epsilon).sqrt())
    }

    /// Writes ∂L/∂x of the group into `dx` given `grad` = ∂L/∂output (see [`composed_backward`]),
    /// and returns the group's share of ∂L/∂γ and ∂L/∂β; with the widest vectors the CPU has.
    fn backward(&self, grad: &[f32], dx: &mut [f32]) -> GroupGradients {
        #[cfg(target_arch = "x86_64")]
        match x86_vectors() {
            // SAFETY: the CPU has the features, checked by `x86_vectors`.
            X86Vectors::Avx512 => return unsafe { self.backward_avx512(grad, dx) },
            X86Vectors::Avx2 => return unsafe { self.backward_avx2(grad, dx) },
            X86Vectors::Sse => {}
        }
        self.backward_portable(grad, dx)
    }

    /// [`Self::backward_portable`] compiled for AVX-512 (16 floats per vector).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn backward_avx512(&self, grad: &[f32], dx: &mut [f32]) -> GroupGradients {
        self.backward_portable(grad, dx)
    }

    /// [`Self::backward_portable`] compiled for AVX2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn backward_avx2(&self, grad: &[f32], dx: &mut [f32]) -> GroupGradients {
        self.backward_portable(grad, dx)
    }

    #[inline(always)]
    fn backward_portable(&self, grad: &[f32], dx: &mut [f32]) -> GroupGradients {
        let (mean, inv_std) = self.statistics();
        let channels = self.gamma.len();
        let (mut d_gamma, mut d_beta) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        let (mut sum_d, mut sum_d_x_hat) = (0.0f64, 0.0f64);
        let (scale, shift) = (inv_std as f32, (-mean * inv_std) as f32);
        let exp = Exp::new();
        // First pass: d = γ·∂L/∂y into dx, the per-channel sums and the group's two sums, in eight
        // lanes so the loop vectorises (see `lane_sum`).
        for (c, ((input, grad), d)) in self
            .input
            .chunks_exact(self.per_channel)
            .zip(grad.chunks_exact(self.per_channel))
            .zip(dx.chunks_exact_mut(self.per_channel))
            .enumerate()
        {
            let (gamma, beta) = (self.gamma[c], self.beta[c]);
            // (∂L/∂y·x̂, ∂L/∂y, d, d·x̂) of one element, writing d.
            let element = |v: f32, g: f32, d: &mut f32| {
                let x_hat = v * scale + shift;
                let y = gamma * x_hat + beta;
                let s = exp.sigmoid(y);
                let dy = g * (s + y * s * (1.0 - s));
                *d = gamma * dy;
                [dy * x_hat, dy, *d, *d * x_hat]
            };
            let mut lanes = [[0.0f32; 8]; 4];
            let mut chunks = input
                .chunks_exact(8)
                .zip(grad.chunks_exact(8))
                .zip(d.chunks_exact_mut(8));
            for ((v8, g8), d8) in &mut chunks {
                for lane in 0..8 {
                    let terms = element(v8[lane], g8[lane], &mut d8[lane]);
                    for (sum, term) in lanes.iter_mut().zip(terms) {
                        sum[lane] += term;
                    }
                }
            }
            let rest = input.len() - input.len() % 8;
            let mut totals = lanes.map(|l| l.iter().map(|&v| v as f64).sum::<f64>());
            for ((&v, &g), d) in input[rest..].iter().zip(&grad[rest..]).zip(&mut d[rest..]) {
                for (total, term) in totals.iter_mut().zip(element(v, g, d)) {
                    *total += term as f64;
                }
            }
            d_gamma[c] = totals[0];
            d_beta[c] = totals[1];
            sum_d += totals[2];
            sum_d_x_hat += totals[3];
        }
        let n = self.input.len() as f64;
        let (mean_d, mean_d_x_hat) = ((sum_d / n) as f32, (sum_d_x_hat / n) as f32);
        let inv_std32 = inv_std as f32;
        // Second pass: ∂L/∂x = (d − mean(d) − x̂·mean(d·x̂))/σ.
        for (d, &v) in dx.iter_mut().zip(self.input) {
            let x_hat = v * scale + shift;
            *d = (*d - mean_d - x_hat * mean_d_x_hat) * inv_std32;
        }
        GroupGradients {
            gamma: d_gamma,
            beta: d_beta,
        }
    }

    /// Writes silu(γ (x − μ)/σ + β) of the group into `output`, with the widest vectors the CPU has.
    fn normalise_silu(&self, output: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        match x86_vectors() {
            // SAFETY: the CPU has the features, checked by `x86_vectors`.
            X86Vectors::Avx512 => return unsafe { self.normalise_silu_avx512(output) },
            X86Vectors::Avx2 => return unsafe { self.normalise_silu_avx2(output) },
            X86Vectors::Sse => {}
        }
        self.normalise_silu_portable(output)
    }

    /// [`Self::normalise_silu_portable`] compiled for AVX-512 (16 floats per vector).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    unsafe fn normalise_silu_avx512(&self, output: &mut [f32]) {
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
        // Statistics in f64: two passes, mean then the mean squared deviation.
        let (mean, inv_std) = self.statistics();
        let exp = Exp::new();
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
                *o = exp.silu(v * scale + shift);
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
        let layout = GroupLayout::new(&shape, gamma, beta, groups, epsilon);
        let group_len = layout.group_len();
        let mut out = vec![0.0f32; x.len()];
        // Group `index` of the batch (groups of every image, one after another).
        let normalise = |(index, (input, output)): (usize, (&[f32], &mut [f32]))| {
            let group = layout.group(index, input);
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

    fn group_norm_silu_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if [&x, &gamma, &beta, &grad].iter().any(|t| t.dtype() != DType::F32) {
            return composed_backward::<Self>(x, gamma, beta, grad, groups, epsilon);
        }
        let shape = x.layout().shape().clone();
        let (x, gamma, beta, grad) = (
            x.to_contiguous(),
            gamma.to_contiguous(),
            beta.to_contiguous(),
            grad.to_contiguous(),
        );
        let (x, gamma, beta, grad) = (
            x.as_slice::<f32>().expect("contiguous f32"),
            gamma.as_slice::<f32>().expect("contiguous f32"),
            beta.as_slice::<f32>().expect("contiguous f32"),
            grad.as_slice::<f32>().expect("contiguous f32"),
        );
        let layout = GroupLayout::new(&shape, gamma, beta, groups, epsilon);
        let (channels, channels_per_group, group_len) = (shape[1], layout.channels_per_group, layout.group_len());
        let mut dx = vec![0.0f32; x.len()];
        let group_backward = |(index, ((input, grad), dx)): (usize, GroupSlices)| {
            let group = layout.group(index, input);
            group.backward(grad, dx)
        };
        #[cfg(feature = "native")]
        let parts: Vec<GroupGradients> = {
            use rayon::prelude::*;
            x.par_chunks_exact(group_len)
                .zip(grad.par_chunks_exact(group_len))
                .zip(dx.par_chunks_exact_mut(group_len))
                .enumerate()
                .map(group_backward)
                .collect()
        };
        #[cfg(not(feature = "native"))]
        let parts: Vec<GroupGradients> = x
            .chunks_exact(group_len)
            .zip(grad.chunks_exact(group_len))
            .zip(dx.chunks_exact_mut(group_len))
            .enumerate()
            .map(group_backward)
            .collect();
        // Each channel's ∂L/∂γ and ∂L/∂β: the sum of its group's shares over the batch.
        let (mut d_gamma, mut d_beta) = (vec![0.0f64; channels], vec![0.0f64; channels]);
        for (index, part) in parts.iter().enumerate() {
            let first_channel = (index % groups) * channels_per_group;
            for k in 0..channels_per_group {
                d_gamma[first_channel + k] += part.gamma[k];
                d_beta[first_channel + k] += part.beta[k];
            }
        }
        let vector = |v: Vec<f64>| {
            burn::backend::flex::FlexTensor::from_data(TensorData::new(
                v.into_iter().map(|x| x as f32).collect::<Vec<_>>(),
                [channels],
            ))
        };
        (
            burn::backend::flex::FlexTensor::from_data(TensorData::new(dx, shape)),
            vector(d_gamma),
            vector(d_beta),
        )
    }
}

#[cfg(any(feature = "native", feature = "webgpu"))]
impl NormSiluBackend for burn::backend::wgpu::CubeBackend {}

/// Under autodiff: the forward on the inner backend, recording a backward step that calls its
/// [`NormSiluBackend::group_norm_silu_backward`].
#[cfg(feature = "native")]
impl<B: NormSiluBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> NormSiluBackend
    for burn::backend::Autodiff<B, C>
{
    fn group_norm_silu(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        groups: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        use burn::backend::autodiff::NodeId;
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};

        #[derive(Debug)]
        struct NormSiluBackward;

        impl<B: NormSiluBackend> Backward<B, 3> for NormSiluBackward {
            type State = (NodeId, NodeId, NodeId, usize, f64);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, beta, groups, epsilon) = ops.state;
                let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
                let gamma: FloatTensor<B> = checkpointer.retrieve_node_output(gamma);
                let beta: FloatTensor<B> = checkpointer.retrieve_node_output(beta);
                let (dx, d_gamma, d_beta) = B::group_norm_silu_backward(x, gamma, beta, grad, groups, epsilon);
                for (node, gradient) in [(node_x, dx), (node_gamma, d_gamma), (node_beta, d_beta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, gradient);
                    }
                }
            }
        }

        match NormSiluBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (
                    prep.checkpoint(&x),
                    prep.checkpoint(&gamma),
                    prep.checkpoint(&beta),
                    groups,
                    epsilon,
                );
                let (x, gamma, beta) = (x.into_parts().0, gamma.into_parts().0, beta.into_parts().0);
                prep.finish(state, B::group_norm_silu(x, gamma, beta, groups, epsilon))
            }
            OpsKind::UnTracked(prep) => {
                let (x, gamma, beta) = (x.into_parts().0, gamma.into_parts().0, beta.into_parts().0);
                prep.finish(B::group_norm_silu(x, gamma, beta, groups, epsilon))
            }
        }
    }
}

/// silu(norm(x)): the fused operation when no gradient is being recorded, burn's modules otherwise.
///
/// # Shapes
/// - `x` and the output: `[batch, channels, height, width]`
pub fn norm_silu(norm: &GroupNorm, x: Tensor<4>) -> Tensor<4> {
    let (Some(gamma), Some(beta)) = (&norm.gamma, &norm.beta) else {
        return silu(norm.forward(x));
    };
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
            let (got, want) = (Exp::new().exp_nonpositive(x) as f64, (x as f64).exp());
            assert!((got - want).abs() <= 4e-7 * want, "e^{x}: {got} vs {want}");
        }
        assert!(Exp::new().exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn the_gradients_equal_those_of_group_norm_then_silu() {
        let device = Device::flex().autodiff();
        let mut rng = NoiseRng::new(9);
        // Groups of 3 × 99 values: one block of 256 for the statistics' partial sums and a remainder.
        let (channels, groups, shape) = (12usize, 4usize, [3usize, 12usize, 9usize, 11usize]);
        let values = |rng: &mut NoiseRng, n: usize, scale: f64, offset: f64| {
            (0..n)
                .map(|_| (rng.normal() * scale + offset) as f32)
                .collect::<Vec<_>>()
        };
        let mut norm = group_norm(groups, channels, &device);
        norm.gamma = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(values(&mut rng, channels, 0.5, 1.0), [channels]),
            &device,
        )));
        norm.beta = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(values(&mut rng, channels, 0.5, 0.0), [channels]),
            &device,
        )));
        let n = shape.iter().product();
        let x = Tensor::<4>::from_data(TensorData::new(values(&mut rng, n, 2.0, 0.5), shape), &device).require_grad();
        // L = Σ r ⊙ out with a random r, so every output's gradient differs.
        let r = Tensor::<4>::from_data(TensorData::new(values(&mut rng, n, 1.0, 0.0), shape), &device);
        let gradients = |fused: bool| {
            let out = if fused {
                norm_silu(&norm, x.clone())
            } else {
                silu(norm.forward(x.clone()))
            };
            let grads = (out * r.clone()).sum().backward();
            [
                x.grad(&grads).unwrap().into_data(),
                norm.gamma.as_ref().unwrap().grad(&grads).unwrap().into_data(),
                norm.beta.as_ref().unwrap().grad(&grads).unwrap().into_data(),
            ]
        };
        let (fused, reference) = (gradients(true), gradients(false));
        // The tensor-op backward (what GPU backends run) against the same reference, on plain tensors.
        let plain = Device::flex();
        let inner = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &plain).into_dispatch();
        let param = |p: &Option<Param<Tensor<1>>>| {
            Tensor::<1>::from_data(p.as_ref().unwrap().val().to_data(), &plain).into_dispatch()
        };
        let (dx, d_gamma, d_beta) = composed_backward::<burn::backend::Dispatch>(
            inner(&x),
            param(&norm.gamma),
            param(&norm.beta),
            inner(&r),
            groups,
            norm.epsilon,
        );
        let composed = [
            Tensor::<4>::from_dispatch(dx).into_data(),
            Tensor::<1>::from_dispatch(d_gamma).into_data(),
            Tensor::<1>::from_dispatch(d_beta).into_data(),
        ];
        for (name, ((f, c), r)) in ["x", "γ", "β"].iter().zip(fused.iter().zip(&composed).zip(&reference)) {
            let (f, c, r) = (
                f.as_slice::<f32>().unwrap(),
                c.as_slice::<f32>().unwrap(),
                r.as_slice::<f32>().unwrap(),
            );
            assert_eq!((f.len(), c.len()), (r.len(), r.len()));
            for ((f, c), r) in f.iter().zip(c).zip(r) {
                assert!((f - r).abs() <= 2e-5 * (1.0 + r.abs()), "∂L/∂{name}: fused {f} vs {r}");
                assert!(
                    (c - r).abs() <= 2e-5 * (1.0 + r.abs()),
                    "∂L/∂{name}: composed {c} vs {r}"
                );
            }
        }
    }

    #[test]
    fn the_fused_operation_equals_group_norm_then_silu() {
        let device = Device::flex();
        let mut rng = NoiseRng::new(3);
        // 32 channels in 8 groups, random affine parameters, inputs with an offset and a spread
        // (as activations have); groups shorter and longer than the statistics' blocks of 256
        // values; and a 3-channel case where the groups fall back to 3.
        for (channels, groups, height, width) in [(32usize, 8usize, 7usize, 5usize), (32, 8, 9, 11), (3, 8, 7, 5)] {
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
            let shape = [2, channels, height, width];
            let x = Tensor::<4>::from_data(
                TensorData::new(values(&mut rng, 2 * channels * height * width, 3.0, 1.5), shape),
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
