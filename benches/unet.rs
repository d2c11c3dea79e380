//! Speed of the pieces that matter: one U-Net forward (batch 1 and 16), one training step
//! (batch 64: forward, backward, Adam, EMA), one reverse step (forward + DDPM update, batch 16;
//! and guided, on a ten-class model at w = 0 and w = 3), and
//! the update alone, fused (the WGSL kernel on wgpu) against separate tensor operations.
//!
//! Runs on burn's CPU backend (flex) by default; `DDPM_BENCH_DEVICE=wgpu` uses wgpu instead
//! (label lavapipe/SwiftShader figures as CPU emulation). Compare `RAYON_NUM_THREADS=1` with 2
//! before trusting a parallel speed-up on small VMs; `benches/compare_with_pytorch.sh` does that and
//! sets the figures beside the PyTorch port's.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use criterion::{Criterion, criterion_group};
use ddpm_explorer::diffusion::sampler::{EpsModel, Guided, ReverseChain, SamplerConfig, VarianceKind, apply_step};
use ddpm_explorer::diffusion::schedule::NoiseSchedule;
use ddpm_explorer::model::{Preset, SkipLayout, UNet, UNetConfig};
use ddpm_explorer::native::allocator::keep_freed_buffers;
use ddpm_explorer::native::threads::on_worker_threads;
use ddpm_explorer::native::train::ema_update;
use ddpm_explorer::rng::NoiseRng;
use std::hint::black_box;

/// The device of every benchmark, opened once (a wgpu device can be initialised only once).
fn device() -> Device {
    static DEVICE: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    DEVICE
        .get_or_init(|| {
            // As the `ddpm` binary does first thing.
            keep_freed_buffers();
            match std::env::var("DDPM_BENCH_DEVICE").as_deref() {
                Ok("wgpu") => Device::wgpu_options().init().expect("a wgpu adapter"),
                _ => Device::flex(),
            }
        })
        .clone()
}

/// The default U-Net, or with `DDPM_BENCH_RES_BLOCKS` residual blocks per level (the shipped model
/// has 1) and with Ho et al.'s skips when `DDPM_BENCH_SKIPS=per-block`.
fn unet_config() -> UNetConfig {
    let res_blocks = std::env::var("DDPM_BENCH_RES_BLOCKS").ok().and_then(|v| v.parse().ok());
    let skips = match std::env::var("DDPM_BENCH_SKIPS").as_deref() {
        Ok("per-block") => SkipLayout::PerBlock,
        _ => SkipLayout::PerLevel,
    };
    UNetConfig::new()
        .with_res_blocks(res_blocks.unwrap_or(2))
        .with_skips(Some(skips))
}

/// Reads the result back, so asynchronous backends finish the work inside the timing.
fn sync(t: Tensor<4>) -> f32 {
    t.sum().into_scalar::<f32>()
}

/// `unet`'s forward at t = 500 for each of `batches` images of `[c, s, s]` (`image`), named
/// `{prefix}batch_{n}` in `group`.
fn bench_forwards(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    unet: &UNet,
    image: [usize; 3],
    batches: &[usize],
    prefix: &str,
) {
    let [c, h, w] = image;
    for &batch in batches {
        let x = NoiseRng::new(0).normal_tensor([batch, c, h, w], &device());
        let t = vec![500; batch];
        group.bench_function(format!("{prefix}batch_{batch}"), |b| {
            b.iter(|| black_box(sync(unet.forward(x.clone(), &t))))
        });
    }
}

fn bench_forward(c: &mut Criterion) {
    let unet = unet_config().init(&device());
    let mut group = c.benchmark_group("unet_forward");
    group.sample_size(10);
    bench_forwards(&mut group, &unet, [1, 28, 28], &[1, 16], "");
    group.finish();
}

/// Steps of Algorithm 1 on `config`'s network (forward, backward, Adam at 2e-4) with a fixed batch
/// x_0 of `shape` and fresh t and ε each time; each call returns the updated network and the step's
/// loss (read back, so an asynchronous backend finishes the step inside the timing).
fn training_steps(config: &UNetConfig, shape: [usize; 4]) -> impl FnMut() -> (UNet, f32) + use<> {
    let device = device().autodiff();
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let mut model = config.init(&device);
    let mut optim = AdamConfig::new().init();
    let mut rng = NoiseRng::new(1);
    let x0 = rng.normal_tensor(shape, &device).clamp(-1.0, 1.0); // [b, c, s, s]
    move || {
        let t: Vec<usize> = (0..shape[0]).map(|_| rng.below(1000)).collect();
        let noise = rng.normal_tensor(shape, &device); // [b, c, s, s]
        let x_t = ddpm_explorer::diffusion::forward::q_sample(&schedule, x0.clone(), &t, noise.clone()); // [b, c, s, s]
        let loss = (model.forward(x_t, &t) - noise).square().mean(); // [1]
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(2e-4, model.clone(), grads);
        (model.clone(), loss.into_scalar::<f32>())
    }
}

fn bench_train_step(c: &mut Criterion) {
    let plain = device();
    let mut step = training_steps(&unet_config(), [64, 1, 28, 28]);
    // The EMA's own starting weights do not change what an update costs.
    let mut ema = unet_config().init(&plain);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    group.bench_function("batch_64", |b| {
        b.iter(|| {
            ema = ema_update(ema.clone(), &step().0, 0.999, 1000);
            black_box(sync(ema_probe(&ema, &plain)))
        })
    });
    group.finish();
}

/// Ho et al.'s CIFAR-10 net (`--preset cifar10`, 35.7 M parameters) on 32 × 32 RGB: a training
/// step of batch 32 (forward, backward, Adam), then the forward at batch 1 and 32. The peak
/// resident memory after the training steps is printed (`VmHWM`: the process's high-water mark).
fn bench_cifar10(c: &mut Criterion) {
    let plain = device();
    let config = Preset::Cifar10.unet();
    let mut step = training_steps(&config, [32, 3, 32, 32]);
    let mut model = None;
    let mut group = c.benchmark_group("cifar10");
    group.sample_size(10);
    group.bench_function("train_step_batch_32", |b| b.iter(|| model = Some(black_box(step()).0)));
    if let Some(peak) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM")).map(str::to_string))
    {
        eprintln!("cifar10: peak resident memory after the training steps: {peak}");
    }
    let unet = model.map_or_else(|| config.init(&plain), |m| m.valid());
    bench_forwards(&mut group, &unet, [3, 32, 32], &[1, 32], "forward_");
    group.finish();
}

fn ema_probe(ema: &ddpm_explorer::model::UNet, device: &Device) -> Tensor<4> {
    ema.forward(Tensor::zeros([1, 1, 28, 28], device), &[0])
}

fn bench_reverse_step(c: &mut Criterion) {
    let device = device();
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let unet = unet_config().init(&device);
    let sampler = SamplerConfig::Ddpm {
        variance: VarianceKind::BetaTilde,
        clip_x0: true,
    };
    let new_chain = || ReverseChain::from_noise(&unet, sampler.build(&schedule).unwrap(), [16, 1, 28, 28], 0, &device);
    let mut chain = new_chain();
    let mut group = c.benchmark_group("reverse_step");
    group.sample_size(10);
    group.bench_function("ddpm_batch_16", |b| {
        b.iter(|| black_box(sync(step_or_restart(&mut chain, new_chain))))
    });
    // Classifier-free guidance on the same net with ten classes: w > 0 asks the conditional and the
    // unconditional ε̂ as one batch of 32; w = 0 is one pass of 16 (what guidance costs, and what
    // it saves when it is off).
    let conditional = unet_config().with_num_classes(Some(10)).init(&device);
    for w in [0.0, 3.0] {
        let classes = (0..16).map(|i| Some(i % 10)).collect::<Vec<_>>();
        let guided = Guided::new(&conditional, classes, w).expect("valid guidance");
        let new_chain =
            || ReverseChain::from_noise(&guided, sampler.build(&schedule).unwrap(), [16, 1, 28, 28], 0, &device);
        let mut chain = new_chain();
        group.bench_function(format!("ddpm_batch_16_guided_w{w}"), |b| {
            b.iter(|| black_box(sync(step_or_restart(&mut chain, new_chain))))
        });
    }
    group.finish();
}

/// The next step's x_{t−1}, starting a fresh chain when the last one has ended.
fn step_or_restart<'m, M: EpsModel>(
    chain: &mut ReverseChain<'m, M>,
    new_chain: impl Fn() -> ReverseChain<'m, M>,
) -> Tensor<4> {
    if let Some(step) = chain.step() {
        return step.x_prev;
    }
    *chain = new_chain();
    chain.step().expect("a fresh chain has steps").x_prev
}

/// The reverse-step update alone (no U-Net), batch 64: the fused operation of `diffusion/sampler/fused.rs`
/// (one WGSL kernel on wgpu) against the same arithmetic as eight separate tensor operations.
fn bench_step_update(c: &mut Criterion) {
    let device = device();
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let sampler = SamplerConfig::Ddpm {
        variance: VarianceKind::BetaTilde,
        clip_x0: true,
    }
    .build(&schedule)
    .unwrap();
    let coefs = sampler.coefs(500);
    let mut rng = NoiseRng::new(3);
    let shape = [64, 1, 28, 28];
    let (x_t, eps, z) = (
        rng.normal_tensor(shape, &device),
        rng.normal_tensor(shape, &device),
        rng.normal_tensor(shape, &device),
    );
    let mut group = c.benchmark_group("step_update");
    group.sample_size(20);
    group.bench_function("fused_batch_64", |b| {
        b.iter(|| {
            let out = apply_step(&coefs, true, x_t.clone(), eps.clone(), Some(z.clone()));
            black_box(sync(out.prev_sample))
        })
    });
    group.bench_function("tensor_ops_batch_64", |b| {
        b.iter(|| {
            let x0 =
                (x_t.clone().mul_scalar(coefs.x0_from_xt) - eps.clone().mul_scalar(coefs.x0_from_eps)).clamp(-1.0, 1.0);
            let prev = x0.mul_scalar(coefs.c_x0)
                + x_t.clone().mul_scalar(coefs.c_xt)
                + eps.clone().mul_scalar(coefs.c_eps)
                + z.clone().mul_scalar(coefs.sigma);
            black_box(sync(prev))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_forward,
    bench_train_step,
    bench_reverse_step,
    bench_step_update,
    bench_cifar10
);
/// `criterion_main!`, with every benchmark on rayon's worker threads as the `ddpm` binary runs
/// (`DDPM_BENCH_FROM_MAIN=1`: from the main thread instead, to measure what that costs).
fn main() {
    let run = || {
        benches();
        Criterion::default().configure_from_args().final_summary();
    };
    if std::env::var_os("DDPM_BENCH_FROM_MAIN").is_some() {
        run()
    } else {
        on_worker_threads(run)
    }
}
