//! The fused reverse step (`shaders/reverse_step.wgsl` on wgpu, composed tensor ops on the CPU)
//! against the step written out by hand on the host in f64:
//!
//! x̂_0 = clip(√(1/ᾱ_t) x_t − √(1/ᾱ_t − 1) ε̂),  x_{t−1} = c_x0 x̂_0 + c_xt x_t + c_eps ε̂ + σ z, with ε̂
//! re-derived from the clipped x̂_0 when clipping is on.
//!
//! The wgpu case runs on whatever adapter wgpu finds: Mesa's lavapipe (CPU emulation of Vulkan)
//! on machines without a GPU, which the set-up script installs.

use burn::tensor::{Device, Tensor, TensorData};
use ddpm_explorer::diffusion::sampler::{SamplerPlan, StepCoefs, VarianceKind, apply_step};
use ddpm_explorer::diffusion::schedule::NoiseSchedule;
use ddpm_explorer::native::device::{DeviceChoice, choose_device};
use ddpm_explorer::rng::NoiseRng;

const SHAPE: [usize; 4] = [3, 1, 28, 28];

fn random(seed: u64, scale: f64) -> Vec<f32> {
    let mut rng = NoiseRng::new(seed);
    (0..SHAPE.iter().product::<usize>())
        .map(|_| (rng.normal() * scale) as f32)
        .collect()
}

/// The step in f64, and for each element the size of the terms it sums (the scale of f32 round-off).
fn host_step(c: &StepCoefs, clip: bool, x_t: &[f32], eps: &[f32], z: &[f32]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let ab = c.alpha_bar;
    let (mut prev, mut x0s, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for ((&x, &e), &n) in x_t.iter().zip(eps).zip(z) {
        let (x, e, n) = (x as f64, e as f64, n as f64);
        let (from_x, from_e) = ((1.0 / ab).sqrt() * x, (1.0 / ab - 1.0).sqrt() * e);
        let mut x0 = from_x - from_e;
        let mut e_used = e;
        if clip {
            x0 = x0.clamp(-1.0, 1.0);
            // The clipped x̂_0's own ε̂: x_t = √ᾱ x̂_0 + √(1 − ᾱ) ε̂ solved for ε̂.
            e_used = (from_x - x0) / (1.0 / ab - 1.0).sqrt();
        }
        prev.push(c.c_x0 * x0 + c.c_xt * x + c.c_eps * e_used + c.sigma * n);
        x0s.push(x0);
        // Round-off of √(1/ᾱ) x_t − x̂_0 is scaled by c_eps / √(1/ᾱ − 1) in the re-derived ε̂.
        let rederived = (c.c_eps / (1.0 / ab - 1.0).sqrt()).abs() * (from_x.abs() + x0.abs());
        sizes.push(
            1.0 + from_x.abs()
                + from_e.abs()
                + (c.c_xt * x).abs()
                + (c.c_eps * e_used).abs()
                + (c.sigma * n).abs()
                + rederived,
        );
    }
    (prev, x0s, sizes)
}

fn tensor(values: &[f32], device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(values.to_vec(), SHAPE), device)
}

/// The largest error relative to the size of the terms summed.
fn worst(got: Tensor<4>, want: &[f64], sizes: &[f64]) -> f64 {
    let data = got.into_data();
    let got = data.as_slice::<f32>().expect("f32");
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .zip(sizes)
        .map(|((g, w), s)| (*g as f64 - w).abs() / s)
        .fold(0.0, f64::max)
}

/// Steps of DDPM (β̃), DDPM (β) and DDIM (η = 0.5), early, middle and final, clipped or not.
fn cases() -> Vec<(StepCoefs, bool)> {
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let ddpm = SamplerPlan::ddpm(&schedule, VarianceKind::BetaTilde, true);
    let ddpm_beta = SamplerPlan::ddpm(&schedule, VarianceKind::Beta, false);
    let ddim = SamplerPlan::ddim(&schedule, 10, 0.5, true).unwrap();
    vec![
        (ddpm.coefs(0), true),
        (ddpm.coefs(500), false),
        (ddpm_beta.coefs(990), false),
        (ddpm.coefs(999), true), // the last step: σ = 0
        (ddim.coefs(0), true),
        (ddim.coefs(4), false),
        (ddim.coefs(9), true),
    ]
}

fn check_device(device: &Device, tolerance: f64) {
    let (x_t, eps, z) = (random(1, 1.0), random(2, 1.0), random(3, 1.0));
    for (c, clip) in cases() {
        let (want_prev, want_x0, sizes) = host_step(&c, clip, &x_t, &eps, &z);
        let noise = (c.sigma > 0.0).then(|| tensor(&z, device));
        let out = apply_step(&c, clip, tensor(&x_t, device), tensor(&eps, device), noise);
        let e_prev = worst(out.prev_sample, &want_prev, &sizes);
        let e_x0 = worst(out.pred_x0, &want_x0, &sizes);
        // f32 arithmetic: a few units of round-off (2^-24 ≈ 6e-8) of the largest term.
        assert!(
            e_prev < tolerance && e_x0 < tolerance,
            "step t = {} (clip {clip}): x_(t-1) off by {e_prev:.2e}, x̂_0 by {e_x0:.2e} (relative)",
            c.t
        );
    }
}

#[test]
fn the_cpu_step_matches_the_host_formula() {
    check_device(&Device::flex(), 5e-7);
}

#[test]
fn the_wgsl_kernel_matches_the_host_formula() {
    let chosen = choose_device(DeviceChoice::Wgpu).expect("a wgpu adapter (lavapipe: scripts/setup.sh installs it)");
    eprintln!("wgpu device: {chosen}");
    check_device(&chosen.device, 5e-7);
}
