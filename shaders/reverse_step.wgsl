// One fused reverse-diffusion step, element-wise over the batch (see src/diffusion/sampler/mod.rs):
//
//   x̂_0     = √(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂          (Ho et al. eq. 4 solved for x_0)
//   x̂_0     ← clamp(x̂_0, −1, 1)                      (when clipping is on)
//   ε̂       ← (√(1/ᾱ_t) x_t − x̂_0) / √(1/ᾱ_t − 1)    (when clipping is on: the ε̂ of the clipped x̂_0)
//   x_{t−1} = c_x0 · x̂_0 + c_xt · x_t + c_eps · ε̂ + σ_t z
//
// Five tensor operations and three intermediate buffers of the composed version become one pass
// that reads x_t, ε̂ and z once and writes x_{t−1} and x̂_0. Every binding is read_write, as
// cubecl binds them: tensors share its memory pages, and a page may hold inputs and outputs at once.

@group(0)
@binding(0)
var<storage, read_write> x_t: array<f32>;

@group(0)
@binding(1)
var<storage, read_write> eps: array<f32>;

@group(0)
@binding(2)
var<storage, read_write> noise: array<f32>;

@group(0)
@binding(3)
var<storage, read_write> prev_sample: array<f32>;

@group(0)
@binding(4)
var<storage, read_write> pred_x0: array<f32>;

// [x0_from_xt, x0_from_eps, c_x0, c_xt, c_eps, sigma, clip (0 or 1), unused]
@group(0)
@binding(5)
var<storage, read_write> coefs: array<f32>;

// [number of elements, invocations per row of workgroups]
@group(0)
@binding(6)
var<storage, read_write> info: array<u32>;

@compute
@workgroup_size({{ workgroup_size }}, 1, 1)
fn main(@builtin(global_invocation_id) global_id: vec3<u32>) {
    let index = global_id.y * info[1] + global_id.x;
    if index >= info[0] {
        return;
    }
    let xt = x_t[index];

    var e = eps[index];
    var x0 = coefs[0] * xt - coefs[1] * e;
    if coefs[6] != 0.0 {
        x0 = clamp(x0, -1.0, 1.0);
        e = (coefs[0] * xt - x0) / coefs[1];
    }
    pred_x0[index] = x0;
    prev_sample[index] = coefs[2] * x0 + coefs[3] * xt + coefs[4] * e + coefs[5] * noise[index];
}
