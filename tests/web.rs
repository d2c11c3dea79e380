//! The browser app in headless Chromium (wasm-bindgen-test; WebGPU is SwiftShader there, so the
//! workloads are tiny): the panels render, the slider moves the forward image as eq. 4 says, the
//! U-Net on WebGPU matches the CPU backend (on the page's thread and in a WebGPU worker), the WGSL
//! reverse-step kernel matches the formula, a few reverse steps run on the GPU path, and the CPU
//! fallback works. Built with the `webgpu` feature, as the page's WebGPU module is
//! (`cargo test --profile web-release --target wasm32-unknown-unknown --features webgpu --test web`).
#![cfg(target_family = "wasm")]

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use ddpm_explorer::diffusion::sampler::{ReverseChain, SamplerConfig, StepCoefs, VarianceKind};
use ddpm_explorer::diffusion::schedule::{NoiseSchedule, ScheduleKind};
use ddpm_explorer::image::{ImageShape, Picture, split_batch, unit_to_byte};
use ddpm_explorer::model::UNet;
use ddpm_explorer::model::weights::{DiffusionConfig, unet_to_bytes};
use ddpm_explorer::rng::NoiseRng;
use ddpm_explorer::view_state::ViewState;
use ddpm_explorer::web::article::{forward_equation, step_equation};
use ddpm_explorer::web::canvas::read_gray;
use ddpm_explorer::web::chain_driver::{read_back, read_back_all};
use ddpm_explorer::web::compare_panel::rms_difference;
use ddpm_explorer::web::engine::{cpu_backend, parse_digits};
use ddpm_explorer::web::forward_panel::{ForwardPanel, forward_noise};
use ddpm_explorer::web::guidance_controls::GuidanceControls;
use ddpm_explorer::web::math_panel::MathPanel;
use ddpm_explorer::web::reverse_panel::{BATCH, Frame, chain_figure, evenly_spaced, format_duration, time_left};
use ddpm_explorer::web::state::PageState;
use ddpm_explorer::web::worker::{EpsWorker, WebGpuModule, WorkerBackend};
use ddpm_explorer::web::worker_pool::{EpsPool, pool_size};
use leptos::mount::mount_to;
use leptos::prelude::*;
use leptos::task::tick;
use wasm_bindgen::JsCast;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn container() -> web_sys::HtmlElement {
    let document = document();
    let section = document.create_element("section").unwrap();
    document.body().unwrap().append_child(&section).unwrap();
    section.unchecked_into()
}

/// The math panel alone, at timestep `t` of the linear schedule with T = 1000, rendered, with the
/// page state it reads; the handle keeps it mounted.
async fn mount_math_panel(t: usize) -> (web_sys::HtmlElement, PageState, impl Sized) {
    let root = container();
    let view = ViewState {
        t,
        ..ViewState::default()
    };
    let state = PageState::new(&view, 1000, ImageShape::MNIST, test_digit());
    let handle = mount_to(root.clone(), move || {
        provide_context(state);
        view! { <MathPanel /> }
    });
    tick().await;
    (root, state, handle)
}

/// The WebGPU device, opened once per test run (a device can be initialised only once).
async fn webgpu() -> Device {
    thread_local!(static GPU: std::cell::RefCell<Option<Device>> = const { std::cell::RefCell::new(None) });
    if let Some(device) = GPU.with_borrow(|gpu| gpu.clone()) {
        return device;
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .expect("headless Chromium grants a WebGPU adapter");
    GPU.set(Some(device.clone()));
    device
}

/// A gradient image in [−1, 1], so every pixel differs.
fn test_digit() -> Vec<f32> {
    (0..784).map(|i| (i as f32 / 783.0) * 2.0 - 1.0).collect()
}

/// ᾱ_t of the linear schedule as the product of (1 − β_i), computed here independently.
fn linear_alpha_bar(t: usize) -> f64 {
    (0..=t)
        .map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
        .product()
}

#[wasm_bindgen_test]
async fn the_slider_moves_the_forward_image_as_equation_4_says() {
    let root = container();
    // The page's state as the app provides it: t = 250, the forward ε from seed 3.
    let view = ViewState {
        t: 250,
        seed: 3,
        schedule: ScheduleKind::Linear,
        ..ViewState::default()
    };
    let state = PageState::new(&view, 1000, ImageShape::MNIST, test_digit());
    let t = state.t;
    let digits = vec![test_digit()];
    let _handle = mount_to(root.clone(), move || {
        provide_context(state);
        view! { <ForwardPanel digits=digits.clone() /> }
    });
    tick().await;

    let slider: web_sys::HtmlInputElement = root.query_selector("#t-slider").unwrap().unwrap().unchecked_into();
    // ᾱ_250 = 0.5214 for the linear schedule (product computed independently).
    assert_eq!(
        slider.get_attribute("aria-valuetext").unwrap(),
        "t = 250 of 1000, ᾱ = 0.52"
    );
    assert!((linear_alpha_bar(250) - 0.5214).abs() < 1e-4);

    slider.set_value("600");
    slider.dispatch_event(&web_sys::Event::new("input").unwrap()).unwrap();
    tick().await;
    assert_eq!(t.get_untracked(), 600);
    assert_eq!(
        slider.get_attribute("aria-valuetext").unwrap(),
        "t = 600 of 1000, ᾱ = 0.03"
    );

    let canvas: web_sys::HtmlCanvasElement = root
        .query_selector("canvas.forward-xt")
        .unwrap()
        .unwrap()
        .unchecked_into();
    let drawn = read_gray(&canvas);
    let (a, b) = (linear_alpha_bar(600).sqrt(), (1.0 - linear_alpha_bar(600)).sqrt());
    let eps = forward_noise(3, ImageShape::MNIST);
    let want: Vec<u8> = test_digit()
        .iter()
        .zip(&eps)
        .map(|(x, e)| unit_to_byte((a * *x as f64 + b * *e as f64) as f32))
        .collect();
    assert_eq!(drawn.len(), 784);
    let off = drawn.iter().zip(&want).filter(|(d, w)| d.abs_diff(**w) > 1).count();
    assert_eq!(off, 0, "{off} pixels differ from √ᾱ x_0 + √(1−ᾱ) ε");
}

#[wasm_bindgen_test]
async fn the_math_panel_shows_the_schedules_numbers() {
    let (root, _state, _handle) = mount_math_panel(487).await;
    let cell = |symbol: &str| {
        root.query_selector(&format!("td.value[data-symbol='{symbol}']"))
            .unwrap()
            .unwrap()
            .text_content()
            .unwrap()
    };
    // diffusers' reference value: β̃ at t = 487 is 0.00979.
    assert_eq!(cell("β̃_t"), "0.00979");
    assert_eq!(cell("ᾱ_t"), format!("{:.5}", linear_alpha_bar(487)));
    assert_eq!(cell("σ_t"), "–");
}

#[wasm_bindgen_test]
fn the_shipped_digit_format_parses() {
    let mut images = vec![0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 28, 0, 0, 0, 28];
    images.extend(vec![255u8; 784]);
    let labels = vec![0, 0, 8, 1, 0, 0, 0, 1, 7];
    let digits = parse_digits(&images, &labels).unwrap();
    assert_eq!((digits.len(), digits.labels[0]), (1, 7));
    assert!(parse_digits(&images[..100], &labels).is_err());
}

fn tiny_unet(device: &Device) -> UNet {
    common::perturbed(common::tiny_unet_config().init(device), 5)
}

fn input(device: &Device) -> Tensor<4> {
    Tensor::from_data(
        TensorData::new(NoiseRng::new(8).normal_vec(2 * 784), [2, 1, 28, 28]),
        device,
    )
}

/// A k×k convolution (stride `stride`, zero padding k/2) written out as its definition, in f64:
/// out[b, o, y, x] = bias[o] + Σ_{i, dy, dx} w[o, i, dy, dx] · in[b, i, s·y + dy − k/2, s·x + dx − k/2].
fn convolution_by_definition(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    [b, ci, h, wd]: [usize; 4],
    (co, k, stride): (usize, usize, usize),
) -> Vec<f64> {
    let pad = (k / 2) as isize;
    let (ho, wo) = ((h - 1) / stride + 1, (wd - 1) / stride + 1);
    let pixel = |n: usize, i: usize, y: isize, xs: isize| {
        let inside = (0..h as isize).contains(&y) && (0..wd as isize).contains(&xs);
        if inside {
            x[((n * ci + i) * h + y as usize) * wd + xs as usize] as f64
        } else {
            0.0
        }
    };
    let mut out = Vec::with_capacity(b * co * ho * wo);
    for n in 0..b {
        for o in 0..co {
            for y in 0..ho {
                for xx in 0..wo {
                    let mut sum = bias[o] as f64;
                    for i in 0..ci {
                        for dy in 0..k {
                            for dx in 0..k {
                                let (yy, xs) = ((stride * y + dy) as isize - pad, (stride * xx + dx) as isize - pad);
                                sum += w[((o * ci + i) * k + dy) * k + dx] as f64 * pixel(n, i, yy, xs);
                            }
                        }
                    }
                    out.push(sum);
                }
            }
        }
    }
    out
}

/// In the browser the CPU backend's convolutions multiply their matrices with this crate's
/// simd128 kernel (`kernels/simd128_product.rs`), not gemm: the 3×3 (Winograd) and 1×1
/// convolutions and the stride-2 downsampling against their definition, at the U-Net's sizes and
/// at channel counts and sizes that leave every kind of row and column remainder.
#[wasm_bindgen_test]
async fn the_convolutions_in_the_browser_equal_their_definition() {
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::{Conv2d, Conv2dConfig};
    use ddpm_explorer::kernels::down_conv::down_conv_forward;
    use ddpm_explorer::kernels::same_conv::conv_forward;

    let device = Device::flex();
    let mut rng = NoiseRng::new(31);
    // (batch, c_in, c_out, height, width, kernel, stride)
    let cases = [
        (2usize, 32usize, 32usize, 28usize, 28usize, 3usize, 1usize),
        (1, 96, 32, 28, 28, 3, 1),
        (1, 64, 64, 14, 14, 3, 1),
        (2, 128, 64, 7, 7, 3, 1),
        (1, 3, 5, 9, 11, 3, 1),
        // Tile rows of whole vectors, whose products take the real tiles alone (compacted):
        // F(2×2, 3×3) at 8 × 8 and 9 × 7, F(4×4, 3×3) at 16 × 16 and 15 × 13.
        (2, 9, 6, 8, 8, 3, 1),
        (1, 5, 7, 9, 7, 3, 1),
        (2, 16, 8, 16, 16, 3, 1),
        (1, 6, 5, 15, 13, 3, 1),
        (2, 96, 32, 28, 28, 1, 1),
        (1, 7, 6, 7, 7, 1, 1),
        (2, 32, 64, 28, 28, 3, 2),
        (1, 64, 64, 14, 14, 3, 2),
        (1, 5, 3, 7, 9, 3, 2),
    ];
    for (batch, ci, co, h, w, k, stride) in cases {
        let pad = k / 2;
        let conv: Conv2d = Conv2dConfig::new([ci, co], [k, k])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(&device);
        let x: Tensor<4> = Tensor::from_data(
            TensorData::new(rng.normal_vec(batch * ci * h * w), [batch, ci, h, w]),
            &device,
        );
        let weights = read_back(conv.weight.val()).await.unwrap();
        let bias = read_back(conv.bias.as_ref().unwrap().val().reshape([1, 1, 1, co]))
            .await
            .unwrap();
        let want = convolution_by_definition(
            &read_back(x.clone()).await.unwrap(),
            &weights,
            &bias,
            [batch, ci, h, w],
            (co, k, stride),
        );
        let y = if stride == 1 {
            conv_forward(&conv, x)
        } else {
            down_conv_forward(&conv, x)
        };
        let got = read_back(y).await.unwrap();
        assert_eq!(
            got.len(),
            want.len(),
            "{ci}→{co} channels, {h}×{w}, {k}×{k} stride {stride}: wrong size"
        );
        // Each value within 1e-5 of the definition, relative to 1 + its size (as natively); the 3×3
        // convolution, by F(4×4, 3×3) in the browser, within 3e-5 (its rounding: `winograd_f4`).
        let tolerance = if k == 3 && stride == 1 { 3e-5 } else { 1e-5 };
        let worst = want
            .iter()
            .zip(&got)
            .map(|(e, &o)| (o as f64 - e).abs() / (1.0 + e.abs()))
            .fold(0.0, f64::max);
        assert!(
            worst <= tolerance,
            "{ci}→{co} channels, {h}×{w}, {k}×{k} stride {stride}: off the definition by {worst:e}"
        );
    }
}

#[wasm_bindgen_test]
async fn the_unet_on_webgpu_matches_the_cpu_backend() {
    let gpu = webgpu().await;
    let cpu = Device::flex();
    let unet_cpu = tiny_unet(&cpu);
    let unet_gpu = unet_cpu.clone().to_device(&gpu);
    let want = read_back(unet_cpu.forward(input(&cpu), &[10, 900])).await.unwrap();
    let got = read_back(unet_gpu.forward(input(&gpu), &[10, 900])).await.unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "the jittered network should not output zeros");
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-3 * scale.max(1.0), "WebGPU and CPU differ by {worst}");

    // A few reverse steps on the GPU path, against the same chain on the CPU.
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let sampler = SamplerConfig::Ddim {
        steps: 3,
        eta: 0.5,
        clip_x0: true,
    };
    let run = |unet: &UNet, device: &Device| {
        ReverseChain::from_noise(unet, sampler.build(&schedule).unwrap(), [1, 1, 28, 28], 21, device).run()
    };
    let x_gpu = read_back(run(&unet_gpu, &gpu)).await.unwrap();
    let x_cpu = read_back(run(&unet_cpu, &cpu)).await.unwrap();
    assert!(x_gpu.iter().all(|v| v.is_finite()));
    let worst = x_cpu
        .iter()
        .zip(&x_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-2, "3 DDIM steps differ by {worst} between WebGPU and CPU");
}

#[wasm_bindgen_test]
async fn the_wgsl_reverse_step_matches_the_host_formula() {
    // shaders/reverse_step.wgsl through burn's custom-kernel API, against the step by hand in f64.
    let gpu = webgpu().await;
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let sampler = SamplerConfig::Ddim {
        steps: 10,
        eta: 0.5,
        clip_x0: true,
    }
    .build(&schedule)
    .unwrap();
    let mut rng = NoiseRng::new(5);
    let n = 2 * 784;
    let (x_t, eps, z) = (rng.normal_vec(n), rng.normal_vec(n), rng.normal_vec(n));
    let tensor = |v: &[f32]| Tensor::<4>::from_data(TensorData::new(v.to_vec(), [2, 1, 28, 28]), &gpu);
    for (index, clip) in [(0, true), (4, false), (9, true)] {
        let c: StepCoefs = sampler.coefs(index);
        let noise = (c.sigma > 0.0).then(|| tensor(&z));
        let out = ddpm_explorer::diffusion::sampler::apply_step(&c, clip, tensor(&x_t), tensor(&eps), noise);
        let prev = read_back(out.prev_sample).await.unwrap();
        let pred_x0 = read_back(out.pred_x0).await.unwrap();
        for i in 0..n {
            let (x, e, n) = (x_t[i] as f64, eps[i] as f64, z[i] as f64);
            let (from_x, from_e) = ((1.0 / c.alpha_bar).sqrt() * x, (1.0 / c.alpha_bar - 1.0).sqrt() * e);
            let mut x0 = from_x - from_e;
            let mut e_used = e;
            if clip {
                x0 = x0.clamp(-1.0, 1.0);
                // The clipped x̂_0's own ε̂ (x_t = √ᾱ x̂_0 + √(1 − ᾱ) ε̂ solved for ε̂).
                e_used = (from_x - x0) / (1.0 / c.alpha_bar - 1.0).sqrt();
            }
            let want = c.c_x0 * x0 + c.c_xt * x + c.c_eps * e_used + c.sigma * n;
            // f32 round-off scales with the terms summed (and, through the re-derived ε̂, with
            // c_eps / √(1/ᾱ − 1) times the terms of x̂_0).
            let rederived = (c.c_eps / (1.0 / c.alpha_bar - 1.0).sqrt()).abs() * (from_x.abs() + x0.abs());
            let scale = 1.0
                + from_x.abs()
                + from_e.abs()
                + (c.c_xt * x).abs()
                + (c.c_eps * e_used).abs()
                + (c.sigma * n).abs()
                + rederived;
            assert!(
                (pred_x0[i] as f64 - x0).abs() < 5e-7 * scale,
                "x̂_0[{i}] at step {index}"
            );
            assert!(
                (prev[i] as f64 - want).abs() < 5e-7 * scale,
                "x_(t-1)[{i}] at step {index}"
            );
        }
    }
}

#[wasm_bindgen_test]
async fn without_an_adapter_the_cpu_backend_runs_and_says_so() {
    let info = cpu_backend("the browser granted no WebGPU adapter".into());
    let device = Device::flex();
    assert!(!info.webgpu);
    assert!(info.label().starts_with("CPU"), "{}", info.label());
    assert!(info.label().contains("no WebGPU adapter"));
    let out = read_back(tiny_unet(&device).forward(input(&device), &[0, 1]))
        .await
        .unwrap();
    assert_eq!(out.len(), 2 * 784);
    assert!(out.iter().all(|v| v.is_finite()));
}

/// The tiny U-Net on `device`, its `config.json` and its weights file.
fn tiny_model(device: &Device) -> (UNet, String, Vec<u8>) {
    let unet = tiny_unet(device);
    let config = DiffusionConfig {
        unet: common::tiny_unet_config(),
        schedule: ScheduleKind::Linear,
        timesteps: 1000,
        class_names: None,
    };
    let weights = unet_to_bytes(unet.clone()).unwrap();
    (unet, config.to_json(), weights)
}

#[wasm_bindgen_test]
async fn the_web_worker_predicts_what_the_unet_on_the_page_predicts() {
    // The worker runs this same module on the same CPU backend: its ε̂ must be the page's, bit for
    // bit, for every image at its own t; a request that does not fit is answered with an error.
    let cpu = Device::flex();
    let (unet, config, weights) = tiny_model(&cpu);
    let worker = EpsWorker::start(&config, &weights, &WorkerBackend::Cpu).await.unwrap();
    let x = NoiseRng::new(8).normal_vec(2 * 784);
    let here = read_back(unet.forward(input(&cpu), &[3, 700])).await.unwrap();
    let there = worker
        .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &[None, None])
        .await
        .unwrap();
    assert_eq!(here, there);
    let misfit = worker.predict_eps(&x, [3, 1, 28, 28], &[3, 700, 5], &[None; 3]).await;
    assert!(misfit.unwrap_err().contains("do not fit"));
    // A worker that cannot build its model says why.
    let broken = EpsWorker::start(&config, &weights[..weights.len() / 2], &WorkerBackend::Cpu).await;
    assert!(broken.err().unwrap().contains("weights"));
}

#[wasm_bindgen_test]
async fn a_webgpu_worker_predicts_what_the_cpu_predicts() {
    // What the page does where the browser has WebGPU: a worker runs the module built with the
    // `webgpu` feature (here this test module itself) on the adapter, and answers for ε̂ as a CPU
    // worker does, to the rounding of another backend.
    let cpu = Device::flex();
    let (unet, config, weights) = tiny_model(&cpu);
    let gpu = EpsWorker::start(&config, &weights, &WorkerBackend::WebGpu(WebGpuModule::this_module()))
        .await
        .expect("headless Chromium grants a WebGPU adapter in a worker");
    let x = NoiseRng::new(8).normal_vec(2 * 784);
    let want = read_back(unet.forward(
        Tensor::from_data(TensorData::new(x.clone(), [2, 1, 28, 28]), &cpu),
        &[3, 700],
    ))
    .await
    .unwrap();
    let got = gpu
        .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &[None, None])
        .await
        .unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(
        worst < 1e-3 * scale.max(1.0),
        "the WebGPU worker and the CPU differ by {worst}"
    );
    // A module without the backend asked for says so, and the page falls back to the CPU.
    let page = WebGpuModule::of_page();
    assert!(page.unwrap_err().contains("without its WebGPU module"));
}

#[wasm_bindgen_test]
fn a_batch_is_shared_out_in_even_runs_and_the_pool_fits_the_cores() {
    // 7 images over 3 workers: 3, 2, 2; 2 images over 3: a run each; 16 over 1: all.
    assert_eq!(split_batch(7, 3), vec![0..3, 3..5, 5..7]);
    assert_eq!(split_batch(2, 3), vec![0..1, 1..2]);
    assert_eq!(split_batch(16, 1), vec![0..16]);
    assert_eq!(
        split_batch(32, 8).iter().map(|r| r.len()).collect::<Vec<_>>(),
        vec![4; 8]
    );
    assert!(split_batch(0, 3).is_empty());
    // One core but the page's, at most eight; two on two cores, one on one.
    assert_eq!([0, 1, 2, 3, 4, 8, 64].map(pool_size), [1, 1, 2, 2, 3, 7, 8]);
}

#[wasm_bindgen_test]
async fn a_pool_of_workers_answers_what_one_worker_answers_bit_for_bit() {
    // Seven images, each at its own t and class, through one worker and through three (runs of
    // 3, 2 and 2): the same ε̂ to the bit, in image order; a request that does not fit is an error.
    let cpu = Device::flex();
    let conditional = common::tiny_unet_config().with_num_classes(Some(4));
    let unet = common::perturbed(conditional.init(&cpu), 6);
    let config = DiffusionConfig {
        unet: conditional,
        schedule: ScheduleKind::Linear,
        timesteps: 1000,
        class_names: None,
    };
    let weights = unet_to_bytes(unet).unwrap();
    let one = EpsPool::start(&config.to_json(), &weights, 1, WorkerBackend::Cpu)
        .await
        .unwrap();
    let three = EpsPool::start(&config.to_json(), &weights, 3, WorkerBackend::Cpu)
        .await
        .unwrap();
    assert_eq!((one.len(), three.len()), (1, 3));
    let x = NoiseRng::new(9).normal_vec(7 * 784);
    let t = [0, 999, 5, 500, 250, 3, 700];
    let classes = [Some(0), None, Some(3), Some(1), None, Some(2), Some(3)];
    async fn ask(pool: &EpsPool, x: &[f32], t: &[usize], classes: &[Option<usize>]) -> Result<Vec<f32>, String> {
        pool.request_eps(x, [7, 1, 28, 28], t, classes)?.eps().await
    }
    let alone = ask(&one, &x, &t, &classes).await.unwrap();
    let shared = ask(&three, &x, &t, &classes).await.unwrap();
    assert_eq!(alone.len(), 7 * 784);
    assert!(alone == shared, "the pool's ε̂ differs from one worker's");
    let misfit = ask(&three, &x, &t[..6], &classes[..6]).await;
    assert!(misfit.unwrap_err().contains("do not fit"));
    // A worker that fails on its part (a class the model lacks) fails the request, with the reason.
    let bad = ask(&three, &x, &t, &[None, None, None, None, None, None, Some(9)]).await;
    assert!(bad.unwrap_err().contains("class 9"));
}

#[wasm_bindgen_test]
async fn the_web_worker_asks_a_conditional_model_for_each_images_class() {
    // A conditional model with a class embedding that is not zero: the worker's ε̂ for classes
    // (3, ∅) is the page's, bit for bit, and differs from the unconditional answer; a class the
    // model does not have is an error, not a panic that would kill the worker.
    let cpu = Device::flex();
    let conditional = common::tiny_unet_config().with_num_classes(Some(4));
    let unet = common::perturbed(conditional.init(&cpu), 5);
    let config = DiffusionConfig {
        unet: conditional,
        schedule: ScheduleKind::Linear,
        timesteps: 1000,
        class_names: Some(["a", "b", "c", "d"].map(String::from).to_vec()),
    };
    let worker = EpsWorker::start(
        &config.to_json(),
        &unet_to_bytes(unet.clone()).unwrap(),
        &WorkerBackend::Cpu,
    )
    .await
    .unwrap();
    let x = NoiseRng::new(8).normal_vec(2 * 784);
    let classes = [Some(3), None];
    let here = read_back(unet.forward_classes(input(&cpu), &[3, 700], Some(&classes)))
        .await
        .unwrap();
    let there = worker
        .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &classes)
        .await
        .unwrap();
    assert_eq!(here, there);
    let unconditional = worker
        .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &[None, None])
        .await
        .unwrap();
    assert_ne!(there[..784], unconditional[..784], "the class changed nothing");
    assert_eq!(there[784..], unconditional[784..], "∅ is ∅");
    let bad = worker
        .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &[Some(4), None])
        .await;
    assert!(bad.unwrap_err().contains("class 4"));
    // The worker still answers after the refusal.
    assert!(
        worker
            .predict_eps(&x, [2, 1, 28, 28], &[3, 700], &classes)
            .await
            .is_ok()
    );
}

#[wasm_bindgen_test]
async fn the_class_picker_and_guidance_slider_drive_the_guidance_equation() {
    let root = container();
    let state = PageState::new(&ViewState::default(), 1000, ImageShape::MNIST, test_digit());
    let names: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let _handle = mount_to(root.clone(), move || {
        provide_context(state);
        view! { <GuidanceControls names=names.clone() /> }
    });
    tick().await;
    let picker: web_sys::HtmlSelectElement = root.query_selector(".class-picker").unwrap().unwrap().unchecked_into();
    let slider: web_sys::HtmlInputElement = root
        .query_selector(".guidance-slider")
        .unwrap()
        .unwrap()
        .unchecked_into();
    // "any" and the ten digits; with "any" there is nothing to guide.
    assert_eq!(picker.length(), 11);
    assert!(slider.disabled());
    assert!(root.query_selector("math").unwrap().is_none());
    // Picking 7 and w = 2.5: the equation says 1 + w = 3.5 and w = 2.5, for class "7".
    picker.set_value("7");
    picker.dispatch_event(&web_sys::Event::new("change").unwrap()).unwrap();
    tick().await;
    assert_eq!(state.class.get_untracked(), Some(7));
    assert!(!slider.disabled());
    slider.set_value("2.5");
    slider.dispatch_event(&web_sys::Event::new("input").unwrap()).unwrap();
    tick().await;
    assert_eq!(state.guidance.get_untracked(), 2.5);
    // The numbers in the equation: the general form's 1 (in 1 + w), then 1 + w = 3.5 and w = 2.5.
    assert_eq!(equation_numbers(&root), [1.0, 3.5, 2.5]);
    assert!(root.text_content().unwrap().contains("“7”"));
    // The chains will ask for that: 16 sevens at w = 2.5.
    let g = state.guidance_for(16).unwrap();
    assert_eq!((g.classes, g.scale), (vec![Some(7); 16], 2.5));
    assert!(state.view(&Default::default()).to_query().contains("&class=7&w=2.5"));
}

#[wasm_bindgen_test]
async fn one_transaction_reads_back_every_picture_of_a_step() {
    // x_{t-1}, x̂_0 and ε̂ of a step come back in one wait for the GPU, in the order registered.
    let gpu = webgpu().await;
    let filled = |v: f32| Tensor::<4>::full([1, 1, 2, 2], v, &gpu);
    let [a, b, c] = read_back_all([filled(1.0), filled(-2.0), filled(0.5)]).await.unwrap();
    assert_eq!((a, b, c), (vec![1.0; 4], vec![-2.0; 4], vec![0.5; 4]));
}

/// The numbers (`<mn>`) of the MathML in `root`'s `.equation` elements.
fn equation_numbers(root: &web_sys::Element) -> Vec<f64> {
    let numbers = root.query_selector_all(".equation mn").unwrap();
    let values: Vec<f64> = (0..numbers.length())
        .filter_map(|i| numbers.item(i)?.text_content()?.parse().ok())
        .collect();
    assert!(!values.is_empty(), "no MathML numbers in {}", root.inner_html());
    values
}

/// True when some number in `values` is `expected` to four significant figures.
fn shows(values: &[f64], expected: f64) -> bool {
    values.iter().any(|v| (v - expected).abs() <= 5e-4 * expected.abs())
}

#[wasm_bindgen_test]
async fn the_equations_carry_the_live_numbers_in_mathml() {
    let (root, state, _handle) = mount_math_panel(487).await;
    assert!(
        root.query_selector(".equation math").unwrap().is_some(),
        "MathML, not text"
    );
    // Ho et al. eq. 7 at t = 487, from the βs written out here.
    let (ab, ab_prev) = (linear_alpha_bar(487), linear_alpha_bar(486));
    let beta = 1e-4 + (0.02 - 1e-4) * 487.0 / 999.0;
    let numbers = equation_numbers(&root);
    assert!(
        shows(&numbers, ab_prev.sqrt() * beta / (1.0 - ab)),
        "coef1 in {numbers:?}"
    );
    assert!(
        shows(&numbers, (1.0 - beta).sqrt() * (1.0 - ab_prev) / (1.0 - ab)),
        "coef2"
    );
    assert!(
        shows(&numbers, (1.0 - ab_prev) / (1.0 - ab) * beta),
        "β̃ (diffusers: 0.00979)"
    );
    // Moving t rewrites them.
    state.t.set(100);
    tick().await;
    let beta = 1e-4 + (0.02 - 1e-4) * 100.0 / 999.0;
    let numbers = equation_numbers(&root);
    assert!(shows(
        &numbers,
        (1.0 - linear_alpha_bar(99)) / (1.0 - linear_alpha_bar(100)) * beta
    ));
}

#[wasm_bindgen_test]
fn the_step_equations_substitute_the_papers_coefficients() {
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let in_page = |mathml: String| {
        let root = container();
        root.set_inner_html(&format!("<div class=\"equation\">{mathml}</div>"));
        equation_numbers(&root)
    };
    // Eq. 4 at t = 250: √ᾱ_t and 1 − ᾱ_t.
    let numbers = in_page(forward_equation(&schedule.row(250).unwrap()));
    assert!(shows(&numbers, linear_alpha_bar(250).sqrt()) && shows(&numbers, 1.0 - linear_alpha_bar(250)));
    // Eq. 11 (DDPM, σ² = β̃) at t = 500: 1/√α_t, β_t/√(1 − ᾱ_t) and σ_t = √β̃_t.
    let ddpm = SamplerConfig::Ddpm {
        variance: VarianceKind::BetaTilde,
        clip_x0: true,
    }
    .build(&schedule)
    .unwrap();
    let c = ddpm.coefs(999 - 500);
    assert_eq!(c.t, 500);
    let beta: f64 = 1e-4 + (0.02 - 1e-4) * 500.0 / 999.0;
    let (ab, ab_prev) = (linear_alpha_bar(500), linear_alpha_bar(499));
    let numbers = in_page(step_equation(&c));
    assert!(shows(&numbers, 1.0 / (1.0 - beta).sqrt()), "1/√α_t in {numbers:?}");
    assert!(shows(&numbers, beta / (1.0 - ab).sqrt()), "β_t/√(1−ᾱ_t)");
    assert!(shows(&numbers, ((1.0 - ab_prev) / (1.0 - ab) * beta).sqrt()), "σ_t");
    // DDIM eq. 12 (η = 0), 10 steps, first step 999 → 899: √ᾱ_899 and √(1 − ᾱ_899).
    let ddim = SamplerConfig::Ddim {
        steps: 10,
        eta: 0.0,
        clip_x0: true,
    }
    .build(&schedule)
    .unwrap();
    let c = ddim.coefs(0);
    assert_eq!((c.t, c.prev_t), (999, Some(899)));
    let numbers = in_page(step_equation(&c));
    assert!(shows(&numbers, linear_alpha_bar(899).sqrt()), "√ᾱ_prev in {numbers:?}");
    assert!(shows(&numbers, (1.0 - linear_alpha_bar(899)).sqrt()), "√(1 − ᾱ_prev)");
}

#[wasm_bindgen_test]
fn the_chain_figure_has_a_row_per_sample_and_a_column_per_shown_step() {
    assert_eq!(evenly_spaced(11, 3), [0, 5, 10]);
    assert_eq!(evenly_spaced(3, 10), [0, 1, 2]);
    assert_eq!(evenly_spaced(1, 10), [0]);
    assert!(evenly_spaced(0, 10).is_empty());
    let spread = evenly_spaced(101, 10);
    assert_eq!((spread.len(), spread[0], spread[9]), (10, 0, 100));
    // 21 frames; frame k has every pixel of every sample at byte value 10·k (k = 0..20).
    let frames: Vec<Frame> = (0..21)
        .map(|k| {
            let v = (10 * k) as f32 / 127.5 - 1.0;
            let pixels = vec![v; BATCH * 784];
            let grid = Picture::grid(&pixels, 28, 4, 1);
            Frame {
                coefs: None,
                x_t: grid.clone(),
                pred_x0: grid.clone(),
                eps: grid,
            }
        })
        .collect();
    let figure = chain_figure(&frames, ImageShape::MNIST, 5);
    // 5 columns (frames 0, 5, 10, 15, 20) of 28 + 1 px, 16 rows.
    assert_eq!((figure.width, figure.height), (5 * 29 + 1, BATCH * 29 + 1));
    for (column, frame) in [0usize, 5, 10, 15, 20].into_iter().enumerate() {
        for row in [0, 7, BATCH - 1] {
            let (x, y) = (1 + column * 29 + 14, 1 + row * 29 + 14);
            assert_eq!(
                figure.pixels[y * figure.width + x] as usize,
                10 * frame,
                "row {row} column {column}"
            );
        }
    }
}

#[wasm_bindgen_test]
fn time_left_and_differences_read_as_expected() {
    assert_eq!(format_duration(300.0), "under a second");
    assert_eq!(format_duration(12_300.0), "12 s");
    assert_eq!(format_duration(185_000.0), "3 min 05 s");
    assert_eq!(time_left((3, 10), 1000.0), " · about 7 s left");
    assert_eq!(time_left((10, 10), 1000.0), "");
    assert_eq!(time_left((0, 10), 0.0), "");
    // √((3² + 4²) / 2).
    assert!((rms_difference(&[0.0, 0.0], &[3.0, 4.0]) - 12.5f64.sqrt()).abs() < 1e-12);
}

#[wasm_bindgen_test]
fn the_list_of_models_is_read_and_bad_lists_are_refused() {
    use ddpm_explorer::web::models::{Catalogue, progress_text};
    let json = r#"{"models": [{"id": "digits", "name": "Digits", "formerly": ["digits-by-class"]}, {"id": "fashion", "name": "Fashion-MNIST", "dir": "fashion", "weights_bytes": 2400000, "noun": {"one": "garment", "many": "garments"}}]}"#;
    let catalogue = Catalogue::from_json(json).unwrap();
    let first = catalogue.pick(None).unwrap();
    // A model that names no noun is a model of "images".
    assert_eq!((first.noun.one.as_str(), first.noun.many.as_str()), ("image", "images"));
    assert_eq!(
        (first.id.as_str(), first.url("model.bpk")),
        ("digits", "assets/model.bpk".to_string())
    );
    let fashion = catalogue.pick(Some("fashion")).unwrap();
    assert_eq!(fashion.url("config.json"), "assets/fashion/config.json");
    assert_eq!(fashion.noun.many, "garments");
    assert!(catalogue.is_default(first) && !catalogue.is_default(fashion));
    assert_eq!(catalogue.pick(Some("cifar")), None);
    // A link saved under a model's former id opens that model.
    assert_eq!(catalogue.pick(Some("digits-by-class")), Some(first));
    for bad in [
        r#"{"models": []}"#,
        r#"{"models": [{"id": "a", "name": "A"}, {"id": "a", "name": "B"}]}"#,
        r#"{"models": [{"id": "a", "name": "A"}, {"id": "b", "name": "B", "formerly": ["a"]}]}"#,
        r#"{"models": [{"id": "a", "name": "A", "formerly": ["old one"]}]}"#,
        r#"{"models": [{"id": "a b", "name": "A"}]}"#,
        r#"{"models": [{"id": "a", "name": "A", "dir": "../secret"}]}"#,
        r#"{"models": [{"id": "a", "name": "A", "dir": "/etc"}]}"#,
        "not json",
    ] {
        assert!(Catalogue::from_json(bad).is_err(), "{bad}");
    }
    assert_eq!(progress_text(1_200_000, Some(2_400_000)), "1.2 of 2.4 MB");
    assert_eq!(progress_text(300_000, None), "0.3 MB");
}
