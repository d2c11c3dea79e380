//! The U-Net's "same" convolutions — 3×3 with padding 1 and 1×1, both stride 1 — as one backend
//! operation each, without an im2col buffer.
//!
//! burn's CPU backend (flex) runs every 2-D convolution as a 3-D one: it converts the input to
//! NHWC, then copies the kernel's shifted windows of it into an im2col matrix (nine times the
//! input's size for 3×3) before one matrix product, and transposes around it. [`SameConvBackend`]
//! on flex runs a 3×3 kernel by Winograd's F(2×2, 3×3) ([`super::winograd`]: 16 matrix products
//! over 2×2 output blocks, 16 multiplications per block and channel pair where the definition
//! takes 36; in the browser at 28 × 28, F(4×4, 3×3), [`super::winograd_f4`]), and a 1×1 kernel
//! as one product `[out, in] × [in, H·W]` per image, on the image as it is. The gradients: ∂L/∂x is this convolution of the output gradient with the kernel flipped and
//! its channels swapped; ∂L/∂w is, for 3×3, the adjoint of the Winograd products (16 products of
//! the transformed output gradient with the transformed input, transformed back to the kernel),
//! for 1×1 the output gradient times the input read transposed in place. Under autodiff (natively)
//! the forward records a backward step that calls them. Other backends use their own `conv2d`.

use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

#[cfg(feature = "native")]
use super::conv_ops::autodiff_conv_extension;
use super::conv_ops::{add_product, all_f32, bias_filled, for_each_image, sum_over_images, with_f32};

/// Whether the 3×3 convolution may run by F(4×4, 3×3) ([`super::winograd_f4`]: 36 products over
/// 4×4 output blocks, 42 % fewer multiplications at 28 × 28) rather than F(2×2, 3×3): in the
/// browser, where only the forward pass runs and the products are most of a step, at the sizes
/// where it is the faster ([`super::winograd_f4::is_faster`]). Natively, where the training's
/// forward and its gradients share F(2×2, 3×3), it is not measured yet.
const WINOGRAD_4X4: bool = cfg!(target_arch = "wasm32");

/// The options of burn's `conv2d` that [`SameConvBackend`] covers, for a `kernel` × `kernel` kernel.
fn same_options(kernel: usize) -> ConvOptions<2> {
    let pad = kernel / 2;
    ConvOptions::new([1, 1], [pad, pad], [1, 1], 1)
}

/// The kernel size of a weight tensor `[channels_out, channels_in, k, k]`.
fn kernel_size<B: Backend>(weight: &FloatTensor<B>) -> usize {
    weight.shape()[2]
}

/// Backends that can run a "same" convolution — a k × k kernel (k = 1 or 3), stride 1, zero
/// padding k/2, so the output has the input's size — and its gradients as one operation each. Under
/// autodiff (natively) the forward records a backward step that calls the two gradient operations
/// below.
#[backend_extension(Flex, Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff: cfg(feature = "native"))]
pub trait SameConvBackend: Backend {
    /// The convolution of `x` with `weight` plus `bias`, zero padding k/2, stride 1.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, height, width]` → `[batch, channels_out, height, width]`
    /// - `weight`: `[channels_out, channels_in, k, k]`, `bias`: `[channels_out]`
    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let options = same_options(kernel_size::<Self>(&weight));
        Self::conv2d(x, weight, Some(bias), options)
    }

    /// ∂L/∂x of the convolution, given `grad` = ∂L/∂output.
    ///
    /// # Shapes
    /// - `x` and the output: `[batch, channels_in, height, width]`; `grad`: `[batch, channels_out,
    ///   height, width]`; `weight`: `[channels_out, channels_in, k, k]`
    fn conv_same_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let options = same_options(kernel_size::<Self>(&weight));
        Self::conv2d_x_backward(x, weight, grad, options)
    }

    /// ∂L/∂weight of the convolution, given `grad` = ∂L/∂output.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, height, width]`; `grad`: `[batch, channels_out, height, width]`;
    ///   `weight` and the output: `[channels_out, channels_in, k, k]`
    fn conv_same_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let options = same_options(kernel_size::<Self>(&weight));
        Self::conv2d_weight_backward(x, weight, grad, options)
    }
}

/// One image of a 1×1 convolution: `output` `[c_out, n]` (which holds the bias) += `weight`
/// `[c_out, c_in]` × `input` `[c_in, n]`.
fn pointwise_image(input: &[f32], weight: &[f32], (c_in, c_out, n): (usize, usize, usize), output: &mut [f32]) {
    // SAFETY: every operand is read and written within its length: c_out·c_in weights, c_in·n
    // inputs, c_out·n outputs, each row-major.
    unsafe {
        add_product(
            (c_out, n, c_in),
            (output.as_mut_ptr(), n as isize, 1),
            (weight.as_ptr(), c_in as isize, 1),
            (input.as_ptr(), n as isize, 1),
        );
    }
}

/// One image's share of a 1×1 convolution's ∂L/∂weight, added to `sum` `[c_out, c_in]`: `grad`
/// `[c_out, n]` × `input` `[c_in, n]` read transposed in place.
fn pointwise_weight_gradient_image(
    input: &[f32],
    grad: &[f32],
    (c_in, c_out, n): (usize, usize, usize),
    sum: &mut [f32],
) {
    // SAFETY: sum covers c_out·c_in values, grad c_out·n, input c_in·n, all read in bounds.
    unsafe {
        add_product(
            (c_out, c_in, n),
            (sum.as_mut_ptr(), c_in as isize, 1),
            (grad.as_ptr(), n as isize, 1),
            (input.as_ptr(), 1, n as isize),
        );
    }
}

impl SameConvBackend for Flex {
    fn conv_same(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let kernel = kernel_size::<Self>(&weight);
        if !all_f32([&x, &weight, &bias]) || !matches!(kernel, 1 | 3) {
            return Self::conv2d(x, weight, Some(bias), same_options(kernel));
        }
        let [batch, c_in, height, width] = x.shape().dims();
        let c_out = weight.shape()[0];
        let n = height * width;
        let (in_len, out_len) = (c_in * n, c_out * n);
        let out = with_f32([&x, &weight, &bias], |[x, weight, bias]| {
            let mut out = bias_filled(bias, batch, n);
            // Images in parallel (natively), each matrix product on one thread: at these sizes (at
            // most 64 × 192 × 784) splitting one product between threads costs more than it saves
            // (batch 1 took 10 ms on 2 threads against 4 ms on one).
            if kernel == 1 {
                for_each_image(x, in_len, &mut out, out_len, |(input, output)| {
                    pointwise_image(input, weight, (c_in, c_out, n), output)
                });
            } else if WINOGRAD_4X4 && super::winograd_f4::is_faster(height, width) {
                let u = super::winograd_f4::transformed_weights(weight, c_in, c_out);
                let dims = (c_in, c_out, height, width);
                for_each_image(x, in_len, &mut out, out_len, |(input, output)| {
                    super::winograd_f4::conv_image(input, &u, dims, output)
                });
            } else {
                let u = super::winograd::transformed_weights(weight, c_in, c_out);
                let dims = (c_in, c_out, height, width);
                for_each_image(x, in_len, &mut out, out_len, |(input, output)| {
                    super::winograd::conv_image(input, &u, dims, output)
                });
            }
            out
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(out, [batch, c_out, height, width]))
    }

    fn conv_same_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let kernel = kernel_size::<Self>(&weight);
        if !all_f32([&x, &weight, &grad]) || !matches!(kernel, 1 | 3) {
            return Self::conv2d_x_backward(x, weight, grad, same_options(kernel));
        }
        // ∂L/∂x[i, y, x] = Σ_{o, ky, kx} w[o, i, ky, kx] · grad[o, y + p − ky, x + p − kx] (p = k/2):
        // the same convolution of grad with the kernel flipped and its channels swapped, and no bias.
        let [c_out, c_in, ..] = weight.shape().dims::<4>();
        let taps = kernel * kernel;
        let mut flipped = vec![0.0f32; c_in * c_out * taps];
        with_f32([&weight], |[w]| {
            for (oi, kernel_taps) in w.chunks_exact(taps).enumerate() {
                let (o, i) = (oi / c_in, oi % c_in);
                for (tap, &value) in kernel_taps.iter().enumerate() {
                    flipped[(i * c_out + o) * taps + taps - 1 - tap] = value;
                }
            }
        });
        let flipped =
            burn::backend::flex::FlexTensor::from_data(TensorData::new(flipped, [c_in, c_out, kernel, kernel]));
        let zero = burn::backend::flex::FlexTensor::from_data(TensorData::new(vec![0.0f32; c_in], [c_in]));
        Self::conv_same(grad, flipped, zero)
    }

    fn conv_same_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let kernel = kernel_size::<Self>(&weight);
        if !all_f32([&x, &weight, &grad]) || !matches!(kernel, 1 | 3) {
            return Self::conv2d_weight_backward(x, weight, grad, same_options(kernel));
        }
        let [_, c_in, height, width] = x.shape().dims();
        let c_out = weight.shape()[0];
        let n = height * width;
        let (in_len, out_len, weight_len) = (c_in * n, c_out * n, c_out * c_in * kernel * kernel);
        let weight = with_f32([&x, &grad], |[x, grad]| {
            if kernel == 1 {
                sum_over_images(x, in_len, grad, out_len, weight_len, |sum, (input, grad)| {
                    pointwise_weight_gradient_image(input, grad, (c_in, c_out, n), sum)
                })
            } else {
                let dims = (c_in, c_out, height, width);
                let du = sum_over_images(x, in_len, grad, out_len, 16 * c_out * c_in, |sum, (input, grad)| {
                    super::winograd::transformed_weight_gradient_image(input, grad, dims, sum)
                });
                super::winograd::weight_gradient(&du, c_in, c_out)
            }
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(weight, [c_out, c_in, kernel, kernel]))
    }
}

#[cfg(any(feature = "native", feature = "webgpu"))]
impl SameConvBackend for burn::backend::wgpu::CubeBackend {}

#[cfg(feature = "native")]
autodiff_conv_extension!(SameConvBackend, SameConv: conv_same, conv_same_x_backward, conv_same_weight_backward);

/// The kernel size k when `conv` is a "same" convolution that [`SameConvBackend`] covers: k = 1 or
/// 3, stride 1, zero padding k/2, undilated, ungrouped, with a bias.
fn same_kernel(conv: &Conv2d) -> Option<usize> {
    let [k, k2] = conv.kernel_size;
    let padded = matches!(
        (k, &conv.padding),
        (1, PaddingConfig2d::Valid | PaddingConfig2d::Explicit(0, 0, 0, 0))
            | (3, PaddingConfig2d::Explicit(1, 1, 1, 1))
    );
    let plain = k == k2 && conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    (padded && plain && conv.bias.is_some()).then_some(k)
}

/// `conv` applied to `x`: one [`SameConvBackend`] operation for a 3×3 or 1×1 "same" convolution,
/// burn's module for any other.
///
/// # Shapes
/// - `x`: `[batch, channels_in, height, width]` → `[batch, channels_out, height, width]`
pub fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(bias) = conv.bias.as_ref().filter(|_| same_kernel(conv).is_some()) else {
        return conv.forward(x);
    };
    let y = burn::backend::Dispatch::conv_same(
        x.into_dispatch(),
        conv.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
    );
    Tensor::from_dispatch(y)
}

#[cfg(test)]
mod tests {
    use super::super::conv_ops::test_support::{assert_equals_definition_and_burn, assert_gradients_equal_burns};
    use super::*;
    use crate::rng::NoiseRng;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Device;

    #[test]
    fn the_one_operation_convolution_equals_the_definition_and_burns_module() {
        let device = Device::flex();
        let mut rng = NoiseRng::new(11);
        // Odd sizes, more and fewer output channels than input, a batch larger and smaller than
        // the thread pool.
        for (batch, ci, co, h, w) in [
            (3usize, 5usize, 7usize, 6usize, 5usize),
            (2, 64, 64, 7, 7),
            (1, 8, 3, 7, 7),
            (9, 2, 4, 4, 9),
            (2, 3, 2, 5, 1),
            (2, 3, 2, 1, 4),
        ] {
            let conv = Conv2dConfig::new([ci, co], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            assert_eq!(same_kernel(&conv), Some(3));
            assert_equals_definition_and_burn(&conv, conv_forward, [batch, ci, h, w], 1, 1e-5, &mut rng);
        }
    }

    #[test]
    fn a_pointwise_convolution_equals_the_definition() {
        let device = Device::flex();
        let mut rng = NoiseRng::new(12);
        let (batch, ci, co, h, w) = (3usize, 5usize, 4usize, 3usize, 7usize);
        let conv = Conv2dConfig::new([ci, co], [1, 1]).init(&device);
        assert_eq!(same_kernel(&conv), Some(1));
        let x: Vec<f32> = rng.normal_vec(batch * ci * h * w);
        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), [batch, ci, h, w]), &device);
        let ours = conv_forward(&conv, input);
        assert_eq!(ours.dims(), [batch, co, h, w]);
        let ours = ours.into_data();
        let ours = ours.as_slice::<f32>().unwrap();
        let weight = conv.weight.val().into_data();
        let weight = weight.as_slice::<f32>().unwrap();
        let bias = conv.bias.as_ref().unwrap().val().into_data();
        let bias = bias.as_slice::<f32>().unwrap();
        // out[n, o, p] = bias[o] + Σ_i w[o, i] · x[n, i, p], p running over the h·w pixels.
        for n in 0..batch {
            for o in 0..co {
                for p in 0..h * w {
                    let r = bias[o] as f64
                        + (0..ci)
                            .map(|i| weight[o * ci + i] as f64 * x[(n * ci + i) * h * w + p] as f64)
                            .sum::<f64>();
                    let got = ours[(n * co + o) * h * w + p] as f64;
                    assert!((got - r).abs() <= 1e-5 * (1.0 + r.abs()), "{got} vs definition {r}");
                }
            }
        }
    }

    #[test]
    fn the_gradients_equal_those_of_burns_module() {
        let device = Device::flex().autodiff();
        let mut rng = NoiseRng::new(5);
        for (batch, ci, co, h, w, kernel) in [
            (3usize, 4usize, 6usize, 5usize, 7usize, 3usize),
            (1, 2, 3, 4, 4, 3),
            // Odd sizes (Winograd tiles past the edge), 81 pixels, one column, one row.
            (2, 3, 5, 9, 9, 3),
            (2, 2, 3, 6, 1, 3),
            (1, 2, 2, 1, 5, 3),
            (3, 6, 4, 5, 7, 1),
            (2, 3, 9, 4, 4, 1),
        ] {
            let pad = kernel / 2;
            let conv = Conv2dConfig::new([ci, co], [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(&device);
            assert_eq!(same_kernel(&conv), Some(kernel));
            assert_gradients_equal_burns(&conv, conv_forward, [batch, ci, h, w], &device, &mut rng);
        }
    }

    #[test]
    fn other_convolutions_keep_burns_module() {
        let device = Device::flex();
        let strided = Conv2dConfig::new([2, 2], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let unpadded = Conv2dConfig::new([2, 2], [3, 3]).init(&device);
        let strided_pointwise = Conv2dConfig::new([2, 2], [1, 1]).with_stride([2, 2]).init(&device);
        let five = Conv2dConfig::new([2, 2], [5, 5])
            .with_padding(PaddingConfig2d::Explicit(2, 2, 2, 2))
            .init(&device);
        let unbiased = Conv2dConfig::new([2, 2], [1, 1]).with_bias(false).init(&device);
        for conv in [strided, unpadded, strided_pointwise, five, unbiased] {
            assert_eq!(same_kernel(&conv), None, "{conv:?}");
        }
        assert_eq!(same_kernel(&Conv2dConfig::new([2, 2], [1, 1]).init(&device)), Some(1));
    }
}
