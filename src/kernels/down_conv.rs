//! The U-Net's downsampling convolution — 3×3, stride 2, zero padding 1 — and its two gradients
//! as one backend operation each.
//!
//! burn's CPU backend (flex) runs it as a 3-D convolution on NHWC copies of the input, with an
//! im2col matrix between transposes. [`DownConvBackend`] on flex gathers each image's nine kernel
//! taps straight from NCHW into `[9·c_in, h_out·w_out]`: the output has a quarter of the input's
//! pixels, so that matrix is 2.25 times the input. Its rows are in the weight tensor's own order
//! (ci, ky, kx), so the weights `[c_out, c_in, 3, 3]` are the left factor as they are: one matrix
//! product per image gives the output, ∂L/∂w is the output gradient times that matrix read
//! transposed, and ∂L/∂x is the transposed weights times the output gradient, scattered back onto
//! the taps' input pixels. Other backends use their own `conv2d`.

#[cfg(feature = "native")]
use super::conv_ops::autodiff_conv_extension;
use super::conv_ops::{add_product, all_f32, bias_filled, for_each_image, sum_over_images, with_f32, with_scratch};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, TensorMetadata, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, TensorData};

/// burn's `conv2d` options of the operation: stride 2, padding 1.
fn down_options() -> ConvOptions<2> {
    ConvOptions::new([2, 2], [1, 1], [1, 1], 1)
}

/// Output length of one axis: ⌊(n + 2 − 3) / 2⌋ + 1 = ⌈n / 2⌉.
fn halved(n: usize) -> usize {
    n.div_ceil(2)
}

/// Backends that can run the 3×3 stride-2 convolution with zero padding 1 and its gradients as one
/// operation each. Under autodiff (natively) the forward records a backward step that calls the
/// two gradient operations below.
#[backend_extension(Flex, Cube: cfg(any(feature = "native", feature = "webgpu")), Autodiff: cfg(feature = "native"))]
pub trait DownConvBackend: Backend {
    /// The convolution of `x` with `weight` plus `bias`.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, h, w]` → `[batch, channels_out, ⌈h/2⌉, ⌈w/2⌉]`
    /// - `weight`: `[channels_out, channels_in, 3, 3]`, `bias`: `[channels_out]`
    fn conv_down(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::conv2d(x, weight, Some(bias), down_options())
    }

    /// ∂L/∂x of the convolution, given `grad` = ∂L/∂output.
    ///
    /// # Shapes
    /// - `x` and the output: `[batch, channels_in, h, w]`; `grad`: `[batch, channels_out, ⌈h/2⌉,
    ///   ⌈w/2⌉]`; `weight`: `[channels_out, channels_in, 3, 3]`
    fn conv_down_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, grad, down_options())
    }

    /// ∂L/∂weight of the convolution, given `grad` = ∂L/∂output.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels_in, h, w]`; `grad`: `[batch, channels_out, ⌈h/2⌉, ⌈w/2⌉]`;
    ///   `weight` and the output: `[channels_out, channels_in, 3, 3]`
    fn conv_down_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, grad, down_options())
    }
}

/// The input pixel that kernel tap `k` (0, 1, 2) of output position `o` reads along one axis of
/// length `n`: 2·o + k − 1, or `None` in the zero padding.
fn tap(o: usize, k: usize, n: usize) -> Option<usize> {
    (2 * o + k).checked_sub(1).filter(|&i| i < n)
}

/// One image's taps: `cols` (`[9·c, h_out·w_out]`) row (ci·9 + ky·3 + kx) holds
/// input[ci, 2·yo + ky − 1, 2·xo + kx − 1] at yo·w_out + xo, zero in the padding.
fn gather_taps(input: &[f32], height: usize, width: usize, cols: &mut [f32]) {
    let (h_out, w_out) = (halved(height), halved(width));
    for (row_index, row) in cols.chunks_exact_mut(h_out * w_out).enumerate() {
        let (ci, ky, kx) = (row_index / 9, row_index % 9 / 3, row_index % 3);
        let channel = &input[ci * height * width..(ci + 1) * height * width];
        for (yo, out_row) in row.chunks_exact_mut(w_out).enumerate() {
            match tap(yo, ky, height) {
                None => out_row.fill(0.0),
                Some(y) => {
                    // Tap kx reads input column 2·xo + kx − 1: every other value from column
                    // kx − 1 on, with a zero where that falls in the padding (column −1 for
                    // kx = 0, column `width` for kx = 2 when the width is odd).
                    let in_row = &channel[y * width..(y + 1) * width];
                    let (pad_left, first) = if kx == 0 { (1, 1) } else { (0, kx - 1) };
                    out_row[..pad_left].fill(0.0);
                    let values = in_row[first..].iter().step_by(2);
                    let written = out_row[pad_left..].iter_mut().zip(values).map(|(v, &x)| *v = x).count();
                    out_row[pad_left + written..].fill(0.0);
                }
            }
        }
    }
}

/// Runs `f` on one image's taps (see [`gather_taps`]), `[9·c, h_out·w_out]` in this thread's
/// scratch buffer.
fn with_taps<R>(input: &[f32], height: usize, width: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    let len = 9 * input.len() / (height * width) * halved(height) * halved(width);
    with_scratch(len, |cols| {
        gather_taps(input, height, width, cols);
        f(cols)
    })
}

/// The inverse of [`gather_taps`]: adds each value of `cols` onto the input pixel its tap reads
/// (the padding's values are dropped).
fn scatter_taps(cols: &[f32], height: usize, width: usize, input: &mut [f32]) {
    let (h_out, w_out) = (halved(height), halved(width));
    for (row_index, row) in cols.chunks_exact(h_out * w_out).enumerate() {
        let (ci, ky, kx) = (row_index / 9, row_index % 9 / 3, row_index % 3);
        let channel = &mut input[ci * height * width..(ci + 1) * height * width];
        for (yo, out_row) in row.chunks_exact(w_out).enumerate() {
            if let Some(y) = tap(yo, ky, height) {
                let in_row = &mut channel[y * width..(y + 1) * width];
                for (xo, &v) in out_row.iter().enumerate() {
                    if let Some(x) = tap(xo, kx, width) {
                        in_row[x] += v;
                    }
                }
            }
        }
    }
}

impl DownConvBackend for Flex {
    fn conv_down(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32([&x, &weight, &bias]) {
            return Self::conv2d(x, weight, Some(bias), down_options());
        }
        let [batch, c_in, height, width] = x.shape().dims();
        let c_out = weight.shape()[0];
        let (h_out, w_out) = (halved(height), halved(width));
        let n = h_out * w_out;
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        let out = with_f32([&x, &weight, &bias], |[x, weight, bias]| {
            let mut out = bias_filled(bias, batch, n);
            for_each_image(x, in_len, &mut out, out_len, |(input, output)| {
                // output [c_out, n] += weight [c_out, 9·c_in] · cols [9·c_in, n]
                // SAFETY: each operand is its full row-major matrix, read and written in bounds.
                with_taps(input, height, width, |cols| unsafe {
                    add_product(
                        (c_out, n, k),
                        (output.as_mut_ptr(), n as isize, 1),
                        (weight.as_ptr(), k as isize, 1),
                        (cols.as_ptr(), n as isize, 1),
                    )
                })
            });
            out
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(out, [batch, c_out, h_out, w_out]))
    }

    fn conv_down_x_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32([&x, &weight, &grad]) {
            return Self::conv2d_x_backward(x, weight, grad, down_options());
        }
        let [batch, c_in, height, width] = x.shape().dims();
        let c_out = weight.shape()[0];
        let n = halved(height) * halved(width);
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        let mut dx = vec![0.0f32; batch * in_len];
        with_f32([&weight, &grad], |[weight, grad]| {
            for_each_image(grad, out_len, &mut dx, in_len, |(grad, dx)| {
                with_scratch(k * n, |cols| {
                    cols.fill(0.0);
                    // cols [9·c_in, n] = weightᵀ [9·c_in, c_out] · grad [c_out, n]
                    // SAFETY: as in `conv_down`, the weights read transposed within their c_out·9·c_in.
                    unsafe {
                        add_product(
                            (k, n, c_out),
                            (cols.as_mut_ptr(), n as isize, 1),
                            (weight.as_ptr(), 1, k as isize),
                            (grad.as_ptr(), n as isize, 1),
                        )
                    }
                    scatter_taps(cols, height, width, dx);
                })
            })
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(dx, [batch, c_in, height, width]))
    }

    fn conv_down_weight_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32([&x, &weight, &grad]) {
            return Self::conv2d_weight_backward(x, weight, grad, down_options());
        }
        let [_, c_in, height, width] = x.shape().dims();
        let c_out = weight.shape()[0];
        let n = halved(height) * halved(width);
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        let dw = with_f32([&x, &grad], |[x, grad]| {
            sum_over_images(x, in_len, grad, out_len, c_out * k, |sum, (input, grad)| {
                // sum [c_out, 9·c_in] += grad [c_out, n] · colsᵀ [n, 9·c_in]
                // SAFETY: as in `conv_down`, cols read transposed within its 9·c_in·n values.
                with_taps(input, height, width, |cols| unsafe {
                    add_product(
                        (c_out, k, n),
                        (sum.as_mut_ptr(), k as isize, 1),
                        (grad.as_ptr(), n as isize, 1),
                        (cols.as_ptr(), 1, n as isize),
                    )
                })
            })
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(dw, [c_out, c_in, 3, 3]))
    }
}

#[cfg(any(feature = "native", feature = "webgpu"))]
impl DownConvBackend for burn::backend::wgpu::CubeBackend {}

#[cfg(feature = "native")]
autodiff_conv_extension!(DownConvBackend, DownConv: conv_down, conv_down_x_backward, conv_down_weight_backward);

/// Whether `conv` is the convolution [`DownConvBackend`] covers: 3×3, stride 2, zero padding 1,
/// undilated, ungrouped, with a bias.
pub(super) fn is_down_conv(conv: &Conv2d) -> bool {
    conv.kernel_size == [3, 3]
        && conv.stride == [2, 2]
        && matches!(conv.padding, PaddingConfig2d::Explicit(1, 1, 1, 1))
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.bias.is_some()
}

/// `conv` (a stride-2 3×3 convolution, see [`is_down_conv`]) applied to `x` as one
/// [`DownConvBackend`] operation; burn's module for any other convolution.
///
/// # Shapes
/// - `x`: `[batch, channels_in, h, w]` → `[batch, channels_out, ⌈h/2⌉, ⌈w/2⌉]`
pub fn down_conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let Some(bias) = conv.bias.as_ref().filter(|_| is_down_conv(conv)) else {
        return conv.forward(x);
    };
    let y = burn::backend::Dispatch::conv_down(
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

    fn down_conv(ci: usize, co: usize, device: &Device) -> Conv2d {
        Conv2dConfig::new([ci, co], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device)
    }

    /// Even and odd sizes (28 → 14 → 7 in the U-Net; 7 → 4, 1 → 1), more channels than taps.
    const SHAPES: [(usize, usize, usize, usize, usize); 5] = [
        (2, 3, 4, 8, 6),
        (1, 2, 5, 7, 7),
        (3, 4, 2, 5, 9),
        (1, 3, 2, 1, 1),
        (2, 16, 8, 14, 14),
    ];

    #[test]
    fn the_one_operation_convolution_equals_the_definition_and_burns_module() {
        let device = Device::flex();
        let mut rng = NoiseRng::new(7);
        for (batch, ci, co, h, w) in SHAPES {
            let conv = down_conv(ci, co, &device);
            assert!(is_down_conv(&conv));
            assert_equals_definition_and_burn(&conv, down_conv_forward, [batch, ci, h, w], 2, 1e-4, &mut rng);
        }
    }

    #[test]
    fn the_gradients_equal_those_of_burns_module() {
        let device = Device::flex().autodiff();
        let mut rng = NoiseRng::new(8);
        for (batch, ci, co, h, w) in SHAPES {
            let conv = down_conv(ci, co, &device);
            assert_gradients_equal_burns(&conv, down_conv_forward, [batch, ci, h, w], &device, &mut rng);
        }
    }

    #[test]
    fn other_convolutions_keep_burns_module() {
        let device = Device::flex();
        let same = Conv2dConfig::new([2, 2], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let unpadded = Conv2dConfig::new([2, 2], [3, 3]).with_stride([2, 2]).init(&device);
        let unbiased = Conv2dConfig::new([2, 2], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(false)
            .init(&device);
        let five = Conv2dConfig::new([2, 2], [5, 5])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        for conv in [same, unpadded, unbiased, five] {
            assert!(!is_down_conv(&conv));
            let x = Tensor::<4>::ones([1, 2, 6, 6], &device);
            let (ours, burns) = (down_conv_forward(&conv, x.clone()), conv.forward(x));
            assert_eq!(ours.into_data(), burns.into_data());
        }
    }
}
