//! What the convolution backend operations ([`super::same_conv`], [`super::down_conv`]) share on
//! flex: f32 views of their operands, one gemm product on raw slices, a per-thread scratch buffer,
//! loops over the images (in parallel natively), the bias gradient, and the autodiff step that
//! records a forward's two gradient operations.

use burn::backend::Flex;
use burn::backend::tensor::FloatTensor;
use burn::tensor::DType;

/// Whether every one of `tensors` holds f32 values (the operations fall back to burn's own
/// convolution for any other type).
pub(super) fn all_f32<const N: usize>(tensors: [&FloatTensor<Flex>; N]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// Runs `f` on the f32 values of `tensors`, each in row-major order (a contiguous copy of any
/// strided one).
pub(super) fn with_f32<R, const N: usize>(tensors: [&FloatTensor<Flex>; N], f: impl FnOnce([&[f32]; N]) -> R) -> R {
    let contiguous = tensors.map(|t| t.to_contiguous());
    f(contiguous
        .each_ref()
        .map(|t| t.as_slice::<f32>().expect("contiguous f32")))
}

/// `batch` images of `pixels` values per channel, each channel holding its `bias` value: the
/// output that a convolution's products then add to.
pub(super) fn bias_filled(bias: &[f32], batch: usize, pixels: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch * bias.len() * pixels);
    for _ in 0..batch {
        for &b in bias {
            out.resize(out.len() + pixels, b);
        }
    }
    out
}

/// dst (m × n) += lhs (m × k) · rhs (k × n) on this thread, with gemm; each operand is its first
/// value and its (row, column) strides.
///
/// # Safety
/// Every element the strides reach must lie inside its operand's allocation.
pub(super) unsafe fn add_product(
    dims: (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    // SAFETY: passed on from the caller.
    unsafe { product(true, dims, dst, lhs, rhs) }
}

/// dst (m × n) = lhs (m × k) · rhs (k × n), as [`add_product`] but without reading dst first.
///
/// # Safety
/// As for [`add_product`].
pub(crate) unsafe fn write_product(
    dims: (usize, usize, usize),
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
) {
    // SAFETY: passed on from the caller.
    unsafe { product(false, dims, dst, lhs, rhs) }
}

/// dst = (dst if `accumulate`) + lhs · rhs, on this thread: with gemm, or in the browser, where
/// dst's and rhs's rows are contiguous (every product of the forward pass), with
/// [`super::simd128_product`].
///
/// # Safety
/// As for [`add_product`].
unsafe fn product(
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    (dst, dst_rs, dst_cs): (*mut f32, isize, isize),
    (lhs, lhs_rs, lhs_cs): (*const f32, isize, isize),
    (rhs, rhs_rs, rhs_cs): (*const f32, isize, isize),
) {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if dst_cs == 1 && rhs_cs == 1 {
        // SAFETY: passed on from the caller.
        return unsafe {
            super::simd128_product::product(
                accumulate,
                (m, n, k),
                (dst, dst_rs),
                (lhs, lhs_rs, lhs_cs),
                (rhs, rhs_rs),
            )
        };
    }
    // SAFETY: the caller keeps every access in bounds.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Runs `f` on this thread's scratch buffer, at least `len` values long (its contents are whatever
/// the last use left: every user writes each value before it reads it). One buffer per thread, kept
/// between calls, instead of a fresh zeroed allocation for every convolution.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        f(&mut scratch[..len])
    })
}

/// Runs `image` on every (input, output) image pair, in parallel natively.
pub(super) fn for_each_image(
    x: &[f32],
    in_len: usize,
    out: &mut [f32],
    out_len: usize,
    image: impl Fn((&[f32], &mut [f32])) + Sync + Send,
) {
    #[cfg(feature = "native")]
    {
        use rayon::prelude::*;
        x.par_chunks_exact(in_len)
            .zip(out.par_chunks_exact_mut(out_len))
            .for_each(image);
    }
    #[cfg(not(feature = "native"))]
    x.chunks_exact(in_len)
        .zip(out.chunks_exact_mut(out_len))
        .for_each(image);
}

/// Σ over the images of `image`'s contribution to a `len`-value sum, given each (input, gradient)
/// image pair; each thread sums its images, the partial sums are added at the end (natively).
pub(super) fn sum_over_images(
    x: &[f32],
    in_len: usize,
    grad: &[f32],
    out_len: usize,
    len: usize,
    image: impl Fn(&mut Vec<f32>, (&[f32], &[f32])) + Sync + Send,
) -> Vec<f32> {
    #[cfg(feature = "native")]
    {
        use rayon::prelude::*;
        x.par_chunks_exact(in_len)
            .zip(grad.par_chunks_exact(out_len))
            .fold(
                || vec![0.0f32; len],
                |mut sum, pair| {
                    image(&mut sum, pair);
                    sum
                },
            )
            .reduce(
                || vec![0.0f32; len],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            )
    }
    #[cfg(not(feature = "native"))]
    {
        let mut sum = vec![0.0f32; len];
        x.chunks_exact(in_len)
            .zip(grad.chunks_exact(out_len))
            .for_each(|pair| image(&mut sum, pair));
        sum
    }
}

/// ∂L/∂bias of a convolution, given `grad` = ∂L/∂output `[batch, c_out, h, w]`: Σ_{b, y, x}
/// grad[b, o, y, x], summed along each channel's contiguous pixels, then over the images (burn's
/// `conv2d_bias_backward` transposes the whole gradient first).
#[cfg(feature = "native")]
fn bias_gradient<B: burn::backend::Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    let shape = grad.shape();
    let (batch, c_out, pixels) = (shape[0], shape[1], shape[2] * shape[3]);
    let rows = B::float_reshape(grad, burn::tensor::Shape::new([batch, c_out, pixels]));
    let per_image = B::float_sum_dim(rows, 2); // [batch, c_out, 1]
    let total = B::float_sum_dim(per_image, 0); // [1, c_out, 1]
    B::float_reshape(total, burn::tensor::Shape::new([c_out]))
}

/// A convolution with a bias as three operations of backend `B`: the forward and the gradients of
/// its input and its weights (the bias gradient is [`bias_gradient`] for all of them).
#[cfg(feature = "native")]
pub(super) trait ConvOperation<B: burn::backend::Backend>: core::fmt::Debug + Send + 'static {
    /// The convolution of `x` with `weight` plus `bias`.
    fn forward(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B>;
    /// ∂L/∂x, given `grad` = ∂L/∂output.
    fn x_backward(x: FloatTensor<B>, weight: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B>;
    /// ∂L/∂weight, given `grad` = ∂L/∂output.
    fn weight_backward(x: FloatTensor<B>, weight: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B>;
}

/// `Op`'s forward under autodiff: run on the inner backend, recording (when a parent needs a
/// gradient) a backward step that keeps x and the weights and calls `Op`'s gradient operations.
#[cfg(feature = "native")]
pub(super) fn tracked_conv<B, C, Op>(
    x: FloatTensor<burn::backend::Autodiff<B, C>>,
    weight: FloatTensor<burn::backend::Autodiff<B, C>>,
    bias: FloatTensor<burn::backend::Autodiff<B, C>>,
) -> FloatTensor<burn::backend::Autodiff<B, C>>
where
    B: burn::backend::Backend,
    C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy,
    Op: ConvOperation<B>,
{
    use burn::backend::autodiff::NodeId;
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};

    #[derive(Debug)]
    struct ConvBackward<Op>(core::marker::PhantomData<Op>);

    impl<B: burn::backend::Backend, Op: ConvOperation<B>> Backward<B, 3> for ConvBackward<Op> {
        type State = (NodeId, NodeId);

        fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
            let [node_x, node_weight, node_bias] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (x, weight) = ops.state;
            let x: FloatTensor<B> = checkpointer.retrieve_node_output(x);
            let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight);
            if let Some(node) = node_x {
                grads.register::<B>(node.id, Op::x_backward(x.clone(), weight.clone(), grad.clone()));
            }
            if let Some(node) = node_weight {
                grads.register::<B>(node.id, Op::weight_backward(x, weight, grad.clone()));
            }
            if let Some(node) = node_bias {
                grads.register::<B>(node.id, bias_gradient::<B>(grad));
            }
        }
    }

    match ConvBackward::<Op>(core::marker::PhantomData)
        .prepare::<C>([x.node(), weight.node(), bias.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = (prep.checkpoint(&x), prep.checkpoint(&weight));
            let (x, weight, bias) = (x.into_parts().0, weight.into_parts().0, bias.into_parts().0);
            prep.finish(state, Op::forward(x, weight, bias))
        }
        OpsKind::UnTracked(prep) => {
            let (x, weight, bias) = (x.into_parts().0, weight.into_parts().0, bias.into_parts().0);
            prep.finish(Op::forward(x, weight, bias))
        }
    }
}

/// Implements backend extension `$extension` for `Autodiff<B, C>`: its forward `$forward` runs on
/// the inner backend through [`tracked_conv`], whose backward step calls `$x_backward` and
/// `$weight_backward` (the extension's own gradient operations) and the bias gradient. `$op` names
/// the marker type that carries the three operations.
#[cfg(feature = "native")]
macro_rules! autodiff_conv_extension {
    ($extension:ident, $op:ident: $forward:ident, $x_backward:ident, $weight_backward:ident) => {
        #[doc = concat!("The three operations of [`", stringify!($extension), "`], for the autodiff step.")]
        #[derive(Debug)]
        struct $op;

        impl<B: $extension> $crate::kernels::conv_ops::ConvOperation<B> for $op {
            fn forward(x: FloatTensor<B>, weight: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
                B::$forward(x, weight, bias)
            }
            fn x_backward(x: FloatTensor<B>, weight: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
                B::$x_backward(x, weight, grad)
            }
            fn weight_backward(x: FloatTensor<B>, weight: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
                B::$weight_backward(x, weight, grad)
            }
        }

        /// Under autodiff: the forward on the inner backend, recording a backward step that calls
        /// its two gradient operations (and the bias gradient, a sum).
        impl<B: $extension, C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy> $extension
            for burn::backend::Autodiff<B, C>
        {
            fn $forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
                $crate::kernels::conv_ops::tracked_conv::<B, C, $op>(x, weight, bias)
            }
        }
    };
}
#[cfg(feature = "native")]
pub(super) use autodiff_conv_extension;

/// Checks shared by the convolution operations' tests: the definition in f64, and the comparison
/// of an operation's gradients with those of burn's module.
#[cfg(test)]
pub(super) mod test_support {
    use crate::rng::NoiseRng;
    use burn::nn::conv::Conv2d;
    use burn::tensor::{Device, Tensor, TensorData};

    /// Output length of one axis for a 3×3 kernel with zero padding 1 (or 1×1 without padding):
    /// ⌊(n − 1) / stride⌋ + 1.
    pub fn out_len(n: usize, stride: usize) -> usize {
        (n - 1) / stride + 1
    }

    /// A 3×3 convolution with zero padding 1 written out as its definition, in f64:
    /// out[b, o, y, x] = bias[o] + Σ_{i, dy, dx} w[o, i, dy, dx] · in[b, i, s·y + dy − 1, s·x + dx − 1]
    /// (s the stride), zero outside the image.
    pub fn by_definition(
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        [b, ci, h, wd]: [usize; 4],
        co: usize,
        stride: usize,
    ) -> Vec<f64> {
        let (ho, wo) = (out_len(h, stride), out_len(wd, stride));
        let mut out = vec![0.0f64; b * co * ho * wo];
        for n in 0..b {
            for o in 0..co {
                for y in 0..ho {
                    for xx in 0..wo {
                        let mut acc = bias[o] as f64;
                        for i in 0..ci {
                            for dy in 0..3 {
                                for dx in 0..3 {
                                    let yy = (stride * y + dy) as isize - 1;
                                    let xs = (stride * xx + dx) as isize - 1;
                                    if yy >= 0 && xs >= 0 && (yy as usize) < h && (xs as usize) < wd {
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

    /// `ours(conv, x)` for a random `x` of `shape` equals the definition (relative 1e-5) and burn's
    /// module (relative `burn_tolerance`), for a 3×3 `conv` with padding 1 and `stride`.
    pub fn assert_equals_definition_and_burn(
        conv: &Conv2d,
        ours: fn(&Conv2d, Tensor<4>) -> Tensor<4>,
        shape @ [batch, _, h, w]: [usize; 4],
        stride: usize,
        burn_tolerance: f32,
        rng: &mut NoiseRng,
    ) {
        let device = conv.weight.val().device();
        let co = conv.weight.dims()[0];
        let x = rng.normal_vec(shape.iter().product());
        let input = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device);
        let y = ours(conv, input.clone());
        assert_eq!(y.dims(), [batch, co, out_len(h, stride), out_len(w, stride)]);
        let y = y.into_data().try_to_vec::<f32>().unwrap();
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
        let exact = by_definition(&x, &weight, &bias, shape, co, stride);
        for ((o, b), e) in y.iter().zip(&burns).zip(&exact) {
            assert!((*o as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()), "{o} vs definition {e}");
            assert!((o - b).abs() <= burn_tolerance * (1.0 + b.abs()), "{o} vs burn {b}");
        }
    }

    /// The gradients of L = Σ r ⊙ ours(conv, x) (a random r, so every output's gradient differs)
    /// with respect to x, the weights and the bias equal those through burn's module (relative
    /// 1e-4), for a random `x` of `shape` on an autodiff `device`.
    pub fn assert_gradients_equal_burns(
        conv: &Conv2d,
        ours: fn(&Conv2d, Tensor<4>) -> Tensor<4>,
        shape: [usize; 4],
        device: &Device,
        rng: &mut NoiseRng,
    ) {
        let x = Tensor::<4>::from_data(TensorData::new(rng.normal_vec(shape.iter().product()), shape), device)
            .require_grad();
        let [batch, _, h, w] = shape;
        let stride = conv.stride[0];
        let out_shape = [batch, conv.weight.dims()[0], out_len(h, stride), out_len(w, stride)];
        let r = Tensor::<4>::from_data(
            TensorData::new(rng.normal_vec(out_shape.iter().product()), out_shape),
            device,
        );
        let gradients = |forward: fn(&Conv2d, Tensor<4>) -> Tensor<4>| {
            let grads = (forward(conv, x.clone()) * r.clone()).sum().backward();
            [
                x.grad(&grads).unwrap().into_data(),
                conv.weight.grad(&grads).unwrap().into_data(),
                conv.bias.as_ref().unwrap().grad(&grads).unwrap().into_data(),
            ]
        };
        let (ours, burns) = (gradients(ours), gradients(|conv, x| conv.forward(x)));
        for (name, (o, b)) in ["x", "weight", "bias"].iter().zip(ours.iter().zip(&burns)) {
            let (o, b) = (o.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
            assert_eq!(o.len(), b.len());
            for (o, b) in o.iter().zip(b) {
                assert!((o - b).abs() <= 1e-4 * (1.0 + b.abs()), "∂L/∂{name}: {o} vs burn {b}");
            }
        }
    }
}
