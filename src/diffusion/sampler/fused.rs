//! The reverse-step update as one backend operation: a hand-written WGSL kernel
//! (`shaders/reverse_step.wgsl`) on the GPU, the same arithmetic composed from tensor ops on the CPU.
//!
//! [`FusedStepBackend`] is a burn backend extension: burn's `Dispatch` routes a call to the backend
//! holding the tensors. On the cubecl backend (wgpu: WebGPU in the browser, Vulkan/Metal natively)
//! a float32 step is one kernel launch that reads x_t, ε̂ and z once and writes x_{t−1} and x̂_0;
//! every other backend or dtype runs [`composed_step`], the textbook sequence of tensor ops.

use super::StepCoefs;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, Scalar, backend_extension};
use burn::tensor::Tensor;

/// Backends that can run one reverse step x_t, ε̂, z → (x_{t−1}, x̂_0).
#[backend_extension(Flex, Cube: cfg(any(feature = "native", feature = "webgpu")))]
pub trait FusedStepBackend: Backend {
    /// One reverse step with host-side coefficients `coefs`; returns `(x_{t−1}, x̂_0)`. By default
    /// composed from tensor ops ([`composed_step`]).
    ///
    /// `noise` is only read where σ_t > 0.
    ///
    /// # Shapes
    /// - `x_t`, `eps`, `noise` and both outputs: `[batch, channels, height, width]`
    fn fused_reverse_step(
        x_t: FloatTensor<Self>,
        eps: FloatTensor<Self>,
        noise: FloatTensor<Self>,
        coefs: StepCoefs,
        clip_x0: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        composed_step::<Self>(x_t, eps, noise, coefs, clip_x0)
    }
}

/// The CPU backend composes the step from tensor ops (the trait's default).
impl FusedStepBackend for Flex {}

/// The reverse step composed from a backend's tensor ops, equation by equation.
pub fn composed_step<B: Backend>(
    x_t: FloatTensor<B>,
    eps: FloatTensor<B>,
    noise: FloatTensor<B>,
    c: StepCoefs,
    clip_x0: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let scaled = |x: FloatTensor<B>, k: f64| B::float_mul_scalar(x, Scalar::from(k));
    // 1. x̂_0 = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂   (eq. 4 solved for x_0, Ho et al. eq. 15)
    let mut pred_x0 = B::float_sub(scaled(x_t.clone(), c.x0_from_xt), scaled(eps.clone(), c.x0_from_eps)); // [b, c, h, w]
    // 2. Optionally clip x̂_0 to the data range [−1, 1].
    let mut eps = eps;
    if clip_x0 {
        pred_x0 = B::float_clamp(pred_x0, Scalar::from(-1.0f64), Scalar::from(1.0f64)); // [b, c, h, w]
        if c.c_eps != 0.0 {
            // The ε̂ that the clipped x̂_0 implies: ε̂ = (√(1/ᾱ_t) x_t − x̂_0) / √(1/ᾱ_t − 1).
            let implied = B::float_sub(scaled(x_t.clone(), c.x0_from_xt), pred_x0.clone()); // [b, c, h, w]
            eps = scaled(implied, 1.0 / c.x0_from_eps); // [b, c, h, w]
        }
    }
    // 3. The mean of p(x_{t−1} | x_t): posterior mean (DDPM, eq. 7) or DDIM's update (eq. 12).
    let mut prev = scaled(pred_x0.clone(), c.c_x0); // [b, c, h, w]
    if c.c_xt != 0.0 {
        prev = B::float_add(prev, scaled(x_t, c.c_xt)); // [b, c, h, w]
    }
    if c.c_eps != 0.0 {
        prev = B::float_add(prev, scaled(eps, c.c_eps)); // [b, c, h, w]
    }
    // 4. Add σ_t z, except on the last step (σ = 0 there).
    if c.sigma > 0.0 {
        prev = B::float_add(prev, scaled(noise, c.sigma)); // [b, c, h, w]
    }
    (prev, pred_x0)
}

/// One reverse step on whatever backend holds `x_t`: the WGSL kernel on the GPU, tensor ops on the CPU.
///
/// Returns `(x_{t−1}, x̂_0)`. `noise` may be `None` only where σ_t = 0.
///
/// # Shapes
/// - `x_t`, `eps`, `noise` and both outputs: `[batch, channels, height, width]`
pub fn reverse_step(
    c: &StepCoefs,
    clip_x0: bool,
    x_t: Tensor<4>,
    eps: Tensor<4>,
    noise: Option<Tensor<4>>,
) -> (Tensor<4>, Tensor<4>) {
    let noise = match noise {
        Some(z) => z,
        None => {
            assert!(c.sigma == 0.0, "a reverse step with σ_t > 0 needs noise");
            // Multiplied by σ_t = 0. A tensor of its own: WebGPU refuses one buffer range bound
            // twice as writable storage in a dispatch.
            Tensor::zeros(x_t.dims(), &x_t.device())
        }
    };
    let (prev, pred_x0) = burn::backend::Dispatch::fused_reverse_step(
        x_t.into_dispatch(),
        eps.into_dispatch(),
        noise.into_dispatch(),
        *c,
        clip_x0,
    );
    (Tensor::from_dispatch(prev), Tensor::from_dispatch(pred_x0))
}

#[cfg(any(feature = "native", feature = "webgpu"))]
mod cube {
    //! The cubecl (wgpu) implementation: launches `shaders/reverse_step.wgsl`.

    use super::{FusedStepBackend, StepCoefs, composed_step};
    use burn::backend::tensor::FloatTensor;
    use burn::backend::wgpu::{
        CubeBackend, CubeDim, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
    };
    use burn::tensor::DType;
    use cubecl::CubeCount;
    use cubecl::prelude::KernelId;
    use cubecl::server::KernelArguments;

    /// Invocations per workgroup.
    const WORKGROUP_SIZE: u32 = 256;
    /// Workgroups per row of the dispatch grid (WebGPU allows 65 535 per dimension).
    const MAX_GROUPS_X: u32 = 32_768;

    /// The WGSL reverse-step kernel, with its workgroup size filled in.
    #[derive(Debug)]
    struct ReverseStepKernel;

    impl KernelSource for ReverseStepKernel {
        fn source(&self) -> SourceTemplate {
            SourceTemplate::new(include_str!("../../../shaders/reverse_step.wgsl"))
                .register("workgroup_size", WORKGROUP_SIZE.to_string())
        }

        fn id(&self) -> KernelId {
            KernelId::new::<Self>().info(WORKGROUP_SIZE)
        }

        fn lang(&self) -> &'static str {
            "wgsl"
        }
    }

    impl FusedStepBackend for CubeBackend {
        fn fused_reverse_step(
            x_t: FloatTensor<Self>,
            eps: FloatTensor<Self>,
            noise: FloatTensor<Self>,
            coefs: StepCoefs,
            clip_x0: bool,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            // The kernel is written for float32 (the dtype the model runs in); anything else composes.
            if [&x_t, &eps, &noise].iter().any(|t| t.dtype != DType::F32) {
                return composed_step::<Self>(x_t, eps, noise, coefs, clip_x0);
            }
            let x_t = into_contiguous(x_t); // [b, c, h, w]
            let eps = into_contiguous(eps); // [b, c, h, w]
            let noise = into_contiguous(noise); // [b, c, h, w]
            let shape = x_t.meta.shape().clone();
            assert_eq!(&shape, eps.meta.shape(), "x_t and ε̂ must have the same shape");
            assert_eq!(&shape, noise.meta.shape(), "x_t and z must have the same shape");
            let n = shape.num_elements();
            let client = x_t.client.clone();
            let output = || {
                let handle = client.empty(n * DType::F32.size());
                CubeTensor::new_contiguous(client.clone(), x_t.device.clone(), shape.clone(), handle, DType::F32)
            };
            let prev = output(); // [b, c, h, w]
            let pred_x0 = output(); // [b, c, h, w]

            let host_coefs = [
                coefs.x0_from_xt,
                coefs.x0_from_eps,
                coefs.c_x0,
                coefs.c_xt,
                coefs.c_eps,
                coefs.sigma,
                if clip_x0 { 1.0 } else { 0.0 },
                0.0,
            ];
            let coef_bytes: Vec<u8> = host_coefs.iter().flat_map(|&c| (c as f32).to_le_bytes()).collect();
            let groups = (n as u32).div_ceil(WORKGROUP_SIZE).max(1);
            let groups_x = groups.min(MAX_GROUPS_X);
            let groups_y = groups.div_ceil(groups_x);
            let info = [n as u32, groups_x * WORKGROUP_SIZE];
            let info_bytes: Vec<u8> = info.iter().flat_map(|v| v.to_le_bytes()).collect();

            client.launch(
                Box::new(SourceKernel::new(ReverseStepKernel, CubeDim::new_1d(WORKGROUP_SIZE))),
                CubeCount::Static(groups_x, groups_y, 1),
                KernelArguments::new().with_buffers(vec![
                    x_t.handle.clone().binding(),
                    eps.handle.clone().binding(),
                    noise.handle.clone().binding(),
                    prev.handle.clone().binding(),
                    pred_x0.handle.clone().binding(),
                    client.create_from_slice(&coef_bytes).binding(),
                    client.create_from_slice(&info_bytes).binding(),
                ]),
            );
            (prev, pred_x0)
        }
    }
}
