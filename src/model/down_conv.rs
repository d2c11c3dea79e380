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

use super::same_conv::{add_product, for_each_image, sum_over_images, with_scratch};
use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Tensor, TensorData};

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
#[backend_extension(Flex, Cube: cfg(any(feature = "native", target_family = "wasm")), Autodiff: cfg(feature = "native"))]
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
                    let in_row = &channel[y * width..(y + 1) * width];
                    for (xo, v) in out_row.iter_mut().enumerate() {
                        *v = tap(xo, kx, width).map_or(0.0, |x| in_row[x]);
                    }
                }
            }
        }
    }
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

/// Whether every one of `tensors` holds f32 values (others take burn's own convolution).
fn all_f32(tensors: [&FloatTensor<Flex>; 3]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

impl DownConvBackend for Flex {
    fn conv_down(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32([&x, &weight, &bias]) {
            return Self::conv2d(x, weight, Some(bias), down_options());
        }
        let shape = x.layout().shape().clone();
        let (batch, c_in, height, width) = (shape[0], shape[1], shape[2], shape[3]);
        let c_out = weight.layout().shape()[0];
        let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
        let x = x.as_slice::<f32>().expect("contiguous f32");
        let weight = weight.as_slice::<f32>().expect("contiguous f32");
        let bias = bias.as_slice::<f32>().expect("contiguous f32");
        let (h_out, w_out) = (halved(height), halved(width));
        let n = h_out * w_out;
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        // The output starts as the bias, which the product adds to.
        let mut out = Vec::with_capacity(batch * out_len);
        for _ in 0..batch {
            for &b in bias {
                out.extend(std::iter::repeat_n(b, n));
            }
        }
        for_each_image(x, in_len, &mut out, out_len, |(input, output)| {
            with_scratch(k * n, |cols| {
                gather_taps(input, height, width, cols);
                // output [c_out, n] += weight [c_out, 9·c_in] · cols [9·c_in, n]
                // SAFETY: each operand is its full row-major matrix, read and written in bounds.
                unsafe {
                    add_product(
                        (c_out, n, k),
                        (output.as_mut_ptr(), n as isize, 1),
                        (weight.as_ptr(), k as isize, 1),
                        (cols.as_ptr(), n as isize, 1),
                    )
                }
            })
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
        let shape = x.layout().shape().clone();
        let (batch, c_in, height, width) = (shape[0], shape[1], shape[2], shape[3]);
        let c_out = weight.layout().shape()[0];
        let (weight, grad) = (weight.to_contiguous(), grad.to_contiguous());
        let weight = weight.as_slice::<f32>().expect("contiguous f32");
        let grad = grad.as_slice::<f32>().expect("contiguous f32");
        let n = halved(height) * halved(width);
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        let mut dx = vec![0.0f32; batch * in_len];
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
        let shape = x.layout().shape().clone();
        let (c_in, height, width) = (shape[1], shape[2], shape[3]);
        let c_out = weight.layout().shape()[0];
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let x = x.as_slice::<f32>().expect("contiguous f32");
        let grad = grad.as_slice::<f32>().expect("contiguous f32");
        let n = halved(height) * halved(width);
        let (in_len, out_len, k) = (c_in * height * width, c_out * n, 9 * c_in);
        let dw = sum_over_images(x, in_len, grad, out_len, c_out * k, |sum, (input, grad)| {
            with_scratch(k * n, |cols| {
                gather_taps(input, height, width, cols);
                // sum [c_out, 9·c_in] += grad [c_out, n] · colsᵀ [n, 9·c_in]
                // SAFETY: as in `conv_down`, cols read transposed within its 9·c_in·n values.
                unsafe {
                    add_product(
                        (c_out, k, n),
                        (sum.as_mut_ptr(), k as isize, 1),
                        (grad.as_ptr(), n as isize, 1),
                        (cols.as_ptr(), 1, n as isize),
                    )
                }
            })
        });
        burn::backend::flex::FlexTensor::from_data(TensorData::new(dw, [c_out, c_in, 3, 3]))
    }
}

#[cfg(any(feature = "native", target_family = "wasm"))]
impl DownConvBackend for burn::backend::wgpu::CubeBackend {}

/// Under autodiff: the forward on the inner backend, recording a backward step that calls its two
/// gradient operations (and the bias gradient, a sum).
#[cfg(feature = "native")]
impl<B: DownConvBackend, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> DownConvBackend
    for burn::backend::Autodiff<B, C>
{
    fn conv_down(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::autodiff::NodeId;
        use burn::backend::autodiff::checkpoint::base::Checkpointer;
        use burn::backend::autodiff::grads::Gradients;
        use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};

        #[derive(Debug)]
        struct DownConvBackward;

        impl<B: DownConvBackend> Backward<B, 3> for DownConvBackward {
            type State = (NodeId, NodeId);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, weight) = ops.state;
                let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
                let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
                if let Some(node) = node_x {
                    let dx = B::conv_down_x_backward(x.clone(), weight.clone(), grad.clone());
                    grads.register::<B>(node.id, dx);
                }
                if let Some(node) = node_weight {
                    let dw = B::conv_down_weight_backward(x, weight, grad.clone());
                    grads.register::<B>(node.id, dw);
                }
                if let Some(node) = node_bias {
                    grads.register::<B>(node.id, super::same_conv::bias_gradient::<B>(grad));
                }
            }
        }

        match DownConvBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
                let (x, weight, bias) = (x.into_parts().0, weight.into_parts().0, bias.into_parts().0);
                prep.finish(state, B::conv_down(x, weight, bias))
            }
            OpsKind::UnTracked(prep) => {
                let (x, weight, bias) = (x.into_parts().0, weight.into_parts().0, bias.into_parts().0);
                prep.finish(B::conv_down(x, weight, bias))
            }
        }
    }
}

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
    use super::*;
    use crate::rng::NoiseRng;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Device;

    /// The convolution written out as its definition, in f64: out[b, o, y, x] = bias[o] +
    /// Σ_{i, dy, dx} w[o, i, dy, dx] · in[b, i, 2y + dy − 1, 2x + dx − 1], zero outside the image.
    fn by_definition(x: &[f32], w: &[f32], bias: &[f32], [b, ci, h, wd]: [usize; 4], co: usize) -> Vec<f64> {
        let (ho, wo) = (h.div_ceil(2), wd.div_ceil(2));
        let mut out = vec![0.0f64; b * co * ho * wo];
        for n in 0..b {
            for o in 0..co {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = bias[o] as f64;
                        for i in 0..ci {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let (yy, xs) = (2 * y as isize + dy - 1, 2 * xx as isize + dx - 1);
                                    if yy >= 0 && xs >= 0 && (yy as usize) < h && (xs as usize) < wd {
                                        let (dy, dx) = (dy as usize, dx as usize);
                                        acc += w[((o * ci + i) * 3 + dy) * 3 + dx] as f64
                                            * x[((n * ci + i) * h + yy as usize) * wd + xs as usize] as f64;
                                    }
                                }
                            }
                        }
                        out[((n * co + o) * ho + y) * wo + xx] = acc;
                    }
                }
            }
        }
        out
    }

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
            let x = rng.normal_vec(batch * ci * h * w);
            let input = Tensor::<4>::from_data(TensorData::new(x.clone(), [batch, ci, h, w]), &device);
            let ours = down_conv_forward(&conv, input.clone());
            assert_eq!(ours.dims(), [batch, co, h.div_ceil(2), w.div_ceil(2)]);
            let ours = ours.into_data().try_to_vec::<f32>().unwrap();
            let burns = conv.forward(input).into_data().try_to_vec::<f32>().unwrap();
            let weight = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
            let bias = conv
                .bias
                .as_ref()
                .unwrap()
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let exact = by_definition(&x, &weight, &bias, [batch, ci, h, w], co);
            for ((o, b), e) in ours.iter().zip(&burns).zip(&exact) {
                assert!((*o as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()), "{o} vs definition {e}");
                assert!((o - b).abs() <= 1e-4 * (1.0 + b.abs()), "{o} vs burn {b}");
            }
        }
    }

    #[test]
    fn the_gradients_equal_those_of_burns_module() {
        let device = Device::flex().autodiff();
        let mut rng = NoiseRng::new(8);
        for (batch, ci, co, h, w) in SHAPES {
            let conv = down_conv(ci, co, &device);
            let x = Tensor::<4>::from_data(
                TensorData::new(rng.normal_vec(batch * ci * h * w), [batch, ci, h, w]),
                &device,
            )
            .require_grad();
            // L = Σ r ⊙ conv(x) with a random r, so every output's gradient differs.
            let out_shape = [batch, co, h.div_ceil(2), w.div_ceil(2)];
            let r = Tensor::<4>::from_data(
                TensorData::new(rng.normal_vec(out_shape.iter().product()), out_shape),
                &device,
            );
            let gradients = |ours: bool| {
                let y = if ours {
                    down_conv_forward(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let grads = (y * r.clone()).sum().backward();
                [
                    x.grad(&grads).unwrap().into_data(),
                    conv.weight.grad(&grads).unwrap().into_data(),
                    conv.bias.as_ref().unwrap().grad(&grads).unwrap().into_data(),
                ]
            };
            let (ours, burns) = (gradients(true), gradients(false));
            for (name, (o, b)) in ["x", "weight", "bias"].iter().zip(ours.iter().zip(&burns)) {
                let (o, b) = (o.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
                assert_eq!(o.len(), b.len());
                for (o, b) in o.iter().zip(b) {
                    assert!((o - b).abs() <= 1e-4 * (1.0 + b.abs()), "∂L/∂{name}: {o} vs burn {b}");
                }
            }
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
