//! The command line, end to end: the schedule's JSON, a tiny training run with resume, sampling
//! to every output, and the error paths (one clear line, non-zero exit, nothing half-written).

use ddpm_explorer::data::{encode_idx_images, encode_idx_labels};
use ddpm_explorer::rng::NoiseRng;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ddpm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args(args)
        .env("WGPU_BACKEND", "vulkan")
        .output()
        .expect("the ddpm binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed run whose error is one line (`error: …`) containing `needle`, and no panic.
fn assert_fails_with(o: &Output, needle: &str) {
    assert!(!o.status.success(), "expected failure, got success: {}", stderr(o));
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one line of error, got: {err}");
    assert!(errors[0].contains(needle), "'{needle}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// With no graphical session (a server, a container, CI), `--device auto` looks for a GPU without
/// any graphics library printing errors on the way (Mesa's Vulkan layers asked Wayland and
/// libwayland printed "error: XDG_RUNTIME_DIR is invalid" twice): stderr holds no error line.
#[test]
fn auto_device_on_a_headless_machine_prints_no_foreign_errors() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("samples.png");
    let weights = concat!(env!("CARGO_MANIFEST_DIR"), "/assets");
    let o = Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args([
            "sample",
            "--weights",
            weights,
            "--n",
            "2",
            "--steps",
            "2",
            "--out",
            png.to_str().unwrap(),
        ])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("NODEVICE_SELECT")
        .output()
        .expect("the ddpm binary runs");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).to_lowercase().contains("error"), "{}", stderr(&o));
    assert!(png.exists());
}

/// A tiny IDX dataset of blurry squares and bars (28×28), written to `dir`.
fn write_tiny_dataset(dir: &Path) {
    let mut rng = NoiseRng::new(9);
    let n = 32;
    let mut pixels = Vec::with_capacity(n * 784);
    for i in 0..n {
        let (cx, cy) = (8 + rng.below(12), 8 + rng.below(12));
        for y in 0..28usize {
            for x in 0..28usize {
                let on = if i % 2 == 0 {
                    x.abs_diff(cx) < 5 && y.abs_diff(cy) < 5
                } else {
                    x.abs_diff(cx) < 2
                };
                pixels.push(if on { 255 } else { 0 });
            }
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train-images-idx3-ubyte"), encode_idx_images(&pixels, 28, 28)).unwrap();
    let labels: Vec<u8> = (0..n).map(|i| (i % 2) as u8).collect();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), encode_idx_labels(&labels)).unwrap();
}

const TINY_MODEL: &[&str] = &[
    "--channels",
    "8",
    "--channel-mult",
    "1,2",
    "--res-blocks",
    "1",
    "--device",
    "cpu",
];

/// `ddpm train` of the tiny model on `data` into `out`, with `flags` added.
fn train_with(data: &Path, out: &Path, flags: &[&str]) -> Output {
    train_on(data, out, &[flags, TINY_MODEL].concat())
}

/// `ddpm train` on `data` into `out` with `flags` (which name the network and the device).
fn train_on(data: &Path, out: &Path, flags: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(flags);
    ddpm(&args)
}

fn train_tiny(data: &Path, out: &Path, steps: &str, resume: bool) -> Output {
    train_tiny_with(data, out, steps, resume, &[])
}

/// [`train_tiny`] with `extra` flags.
fn train_tiny_with(data: &Path, out: &Path, steps: &str, resume: bool, extra: &[&str]) -> Output {
    let mut flags = vec![
        "--steps",
        steps,
        "--batch",
        "4",
        "--checkpoint-every",
        "2",
        "--sample-every",
        "3",
        "--log-every",
        "1",
        "--warmup",
        "2",
    ];
    if resume {
        flags.push("--resume");
    }
    flags.extend_from_slice(extra);
    train_with(data, out, &flags)
}

#[test]
fn schedule_json_has_every_field_with_reference_values() {
    let o = ddpm(&["schedule", "--schedule", "linear", "--t", "0,487,999", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schedule"], "linear");
    assert_eq!(v["timesteps"], 1000);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for key in [
        "t",
        "beta",
        "alpha",
        "alpha_bar",
        "sqrt_alpha_bar",
        "sqrt_one_minus_alpha_bar",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "snr",
    ] {
        assert!(rows[0].get(key).is_some(), "missing {key}");
    }
    // Ho et al.: β_1 = 1e-4; diffusers' test values for β̃ at 487 and 999.
    assert!((rows[0]["beta"].as_f64().unwrap() - 1e-4).abs() < 1e-15);
    assert!((rows[0]["alpha_bar"].as_f64().unwrap() - 0.9999).abs() < 1e-15);
    assert!((rows[1]["posterior_variance"].as_f64().unwrap() - 0.00979).abs() < 1e-5);
    assert!((rows[2]["posterior_variance"].as_f64().unwrap() - 0.02).abs() < 1e-5);
    // At t = 0 the posterior mean is x̂_0 itself (coef1 = 1, coef2 = 0).
    assert!((rows[0]["posterior_mean_coef1"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    let o = ddpm(&["schedule", "--schedule", "cosine", "--t", "999", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"][0]["beta"], 0.999);
}

#[test]
fn schedule_rejects_bad_input() {
    assert_fails_with(&ddpm(&["schedule", "--t", "1000"]), "out of range");
    assert_fails_with(&ddpm(&["schedule", "--timesteps", "0"]), "at least one timestep");
    let o = ddpm(&["schedule", "--schedule", "quadratic"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("[possible values: linear, cosine]"),
        "{}",
        stderr(&o)
    );
    let o = ddpm(&["schedule", "--no-such-flag"]);
    assert!(!o.status.success());
}

/// Steps 0..6 in one go and as 0..3 then a resume to 6 (from the checkpoint every run writes at its
/// last step) end in the same weights, bit for bit: data order, timesteps, noise and dropout all
/// follow (seed, step).
#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let run = |out: &Path, steps: &str, resume: bool| {
        let o = train_tiny(&data, out, steps, resume);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&whole, "6", false);
    run(&split, "3", false);
    run(&split, "6", true);
    // The files themselves differ (a burnpack records each parameter's random id): compare values.
    for f in ["checkpoint/model.bpk", "checkpoint/ema.bpk", "export/model.bpk"] {
        assert!(
            parameters(&whole, f) == parameters(&split, f),
            "{f} differs between the uninterrupted and the resumed run"
        );
    }
    assert_eq!(
        std::fs::read_to_string(whole.join("loss.csv")).unwrap(),
        std::fs::read_to_string(split.join("loss.csv")).unwrap()
    );
}

/// A learning-rate decay added when resuming, where it has not begun, gives the run that had it from
/// the start (bit for bit), with the learning rates Ho et al.'s warm-up and a linear fall to zero
/// give by hand; a decay that would have changed steps already taken is refused.
#[test]
fn a_decay_added_on_resume_equals_one_there_from_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let train = |out: &Path, steps: &str, resume: bool, decay_from: Option<&str>| {
        let decay = decay_from.map(|step| ["--lr-decay-from", step]);
        train_tiny_with(&data, out, steps, resume, decay.as_ref().map_or(&[], |d| &d[..]))
    };
    let o = train(&whole, "6", false, Some("3"));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&split, "3", false, None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_fails_with(&train(&split, "6", true, Some("2")), "may change when resuming");
    let o = train(&split, "6", true, Some("3"));
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["checkpoint/model.bpk", "checkpoint/ema.bpk"] {
        assert!(parameters(&whole, f) == parameters(&split, f), "{f} differs");
    }
    // lr 2e-4 (the default), warm-up over 2 steps, then 2e-4 · (6 − step)/(6 − 3) from step 3.
    let rates = |run: &Path| -> Vec<f64> {
        std::fs::read_to_string(run.join("loss.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
            .collect()
    };
    let expected = [1e-4, 2e-4, 2e-4, 2e-4, 2e-4 * 2.0 / 3.0, 2e-4 / 3.0];
    for run in [&whole, &split] {
        let got = rates(run);
        assert_eq!(got.len(), 6);
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() <= 1e-3 * e, "{got:?} vs {expected:?}");
        }
    }
}

/// `--devices`: a batch of 5 split across two wgpu devices (3 images and 2; Mesa's lavapipe here,
/// opened as wgpu's default and its CPU adapter: two devices with their own queues and memory, CPU
/// emulation) trains as one device with the whole batch, to rounding: the same losses, and after
/// four large steps (Adam at 1e-2, dropout 0.1, labels dropped) the same weights; and a two-device
/// run resumed on two devices equals an uninterrupted one bit for bit.
#[test]
fn two_devices_train_as_one_device_with_the_whole_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let tiny_net = &TINY_MODEL[..TINY_MODEL.len() - 2]; // without its --device cpu
    let run = |out: &str, devices: &str, steps: &str, resume: bool| {
        let out = tmp.path().join(out);
        let mut flags = vec!["--devices", devices, "--steps", steps, "--batch", "5", "--lr", "1e-2"];
        flags.extend_from_slice(&["--warmup", "1", "--log-every", "1", "--checkpoint-every", "2"]);
        flags.extend_from_slice(&["--sample-every", "0", "--conditional"]);
        if resume {
            flags.push("--resume");
        }
        let o = train_on(&data, &out, &[&flags, tiny_net].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        let several = devices.contains(',');
        assert_eq!(stderr(&o).contains("on 2 devices (wgpu"), several, "{}", stderr(&o));
        out
    };
    let one = run("one", "wgpu", "4", false);
    let two = run("two", "wgpu,wgpu-cpu", "4", false);
    let losses = |run: &Path| -> Vec<f64> {
        let csv = std::fs::read_to_string(run.join("loss.csv")).unwrap();
        csv.lines()
            .skip(1)
            .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
            .collect()
    };
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 4);
    assert!(
        l1[3] < 0.9 * l1[0],
        "the steps are large enough to move the weights: {l1:?}"
    );
    for (a, b) in l1.iter().zip(&l2) {
        assert!((a - b).abs() <= 1e-5 * a, "{l1:?} vs {l2:?}");
    }
    let (w1, w2) = (
        parameters(&one, "checkpoint/model.bpk"),
        parameters(&two, "checkpoint/model.bpk"),
    );
    let worst = w1.iter().zip(&w2).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    eprintln!("largest difference of a weight, one device against two: {worst:e}");
    assert!(worst <= 1e-4, "largest difference of a weight: {worst}");
    // Resumed at step 2 on the same two devices: bit for bit.
    let split = run("split", "wgpu,wgpu-cpu", "2", false);
    run("split", "wgpu,wgpu-cpu", "4", true);
    assert!(parameters(&two, "checkpoint/model.bpk") == parameters(&split, "checkpoint/model.bpk"));
    // A device named twice, the CPU beside another, more devices than images: one clear line each.
    let bad = |devices: &str, batch: &str| {
        train_on(
            &data,
            &tmp.path().join("bad"),
            &["--devices", devices, "--batch", batch, "--steps", "1"],
        )
    };
    assert_fails_with(&bad("wgpu-cpu,wgpu-cpu", "4"), "named twice");
    assert_fails_with(&bad("cpu,wgpu", "4"), "one device");
    assert_fails_with(&bad("tpu:0", "4"), "is not a device");
    assert_fails_with(&bad("wgpu,wgpu-cpu", "1"), "cannot be split across 2 devices");
    assert!(!tmp.path().join("bad").join("checkpoint").exists());
}

/// Every parameter value of the U-Net stored at `run/file`, in the network's own order.
fn parameters(run: &Path, file: &str) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::{Device, Tensor};
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(param.val().into_data().as_slice::<f32>().unwrap());
        }
    }
    let json = std::fs::read_to_string(run.join("export/config.json")).unwrap();
    let config = ddpm_explorer::model::weights::DiffusionConfig::from_json(&json).unwrap();
    let unet = config
        .load_unet(std::fs::read(run.join(file)).unwrap(), &Device::flex())
        .unwrap();
    let mut collect = Collect(Vec::new());
    unet.visit(&mut collect);
    assert!(!collect.0.is_empty());
    collect.0
}

/// On a toy set of two shapes the loss falls: the mean of the last 20 logged losses is below
/// half the first 20 (an untrained ε-predictor starts near E‖ε‖²/dim = 1).
#[test]
fn the_loss_falls_on_a_toy_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let out = tmp.path().join("run");
    let flags = [
        "--steps",
        "150",
        "--batch",
        "8",
        "--checkpoint-every",
        "150",
        "--sample-every",
        "0",
        "--log-every",
        "1",
        "--warmup",
        "10",
        "--lr",
        "2e-3",
    ];
    let o = train_with(&data, &out, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let losses: Vec<f64> = std::fs::read_to_string(out.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // The first step's network outputs zeros (its last convolution starts at zero), so its loss is
    // the mean of ε² over 8 × 784 standard normal values: 1 ± 0.018 (one standard deviation, √(2/6272)).
    assert!((losses[0] - 1.0).abs() < 0.1, "first loss {}", losses[0]);
    let (first, last) = (mean(&losses[..20]), mean(&losses[losses.len() - 20..]));
    assert!(last < 0.5 * first, "loss went from {first:.3} to {last:.3}");
}

#[test]
fn train_resume_sample_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    write_tiny_dataset(&data);

    // Train 4 steps: checkpoints at 2 and 4, a sample grid at 3, an export.
    let o = train_tiny(&data, &run, "4", false);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "checkpoint/model.bpk",
        "checkpoint/ema.bpk",
        "checkpoint/optim.bpk",
        "checkpoint/state.json",
        "export/model.bpk",
        "export/config.json",
        "train.json",
        "loss.csv",
        "loss.svg",
        "samples/step_0000003.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["step"], 4);
    let csv = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");

    // Training again into the same folder without --resume refuses to clobber it.
    assert_fails_with(&train_tiny(&data, &run, "4", false), "--resume");
    // Resume to 6 steps: continues from step 4.
    let o = train_tiny(&data, &run, "6", true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("steps 4..6"), "{}", stderr(&o));
    let csv = std::fs::read_to_string(run.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6, "{csv}");
    assert!(!run.join("checkpoint.tmp").exists() && !run.join("checkpoint.old").exists());
    // Resuming with another recipe (here the learning rate) is refused; nothing is touched.
    let (d, r) = (data.to_str().unwrap(), run.to_str().unwrap());
    let mut args = vec![
        "train", "--data", d, "--out", r, "--steps", "8", "--batch", "4", "--warmup", "2", "--lr", "1e-3", "--resume",
    ];
    args.extend_from_slice(TINY_MODEL);
    assert_fails_with(&ddpm(&args), "recipe");
    assert_eq!(
        std::fs::read_to_string(run.join("loss.csv")).unwrap().lines().count(),
        1 + 6
    );
    // Resuming needs no repeated recipe flags: the checkpoint's state.json supplies them.
    let o = ddpm(&[
        "train", "--data", d, "--out", r, "--steps", "7", "--resume", "--device", "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("steps 6..7"), "{}", stderr(&o));

    // Sample to every output.
    let export = run.join("export");
    let out = tmp.path().join("grid.png");
    let dir = tmp.path().join("digits");
    let chain = tmp.path().join("chain.png");
    let o = ddpm(&[
        "sample",
        "--weights",
        export.to_str().unwrap(),
        "--n",
        "3",
        "--steps",
        "4",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--out-dir",
        dir.to_str().unwrap(),
        "--chain",
        chain.to_str().unwrap(),
        "--chain-frames",
        "3",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 3 images → 2 columns × 2 rows of 28 px with 2 px padding: 62 × 62.
    assert_eq!(png_size(&out), (62, 62));
    assert_eq!(png_size(&dir.join("00002.png")), (28, 28));
    // Chain: x_T plus 3 frames → 4 columns (122 px), two rows of 32 px.
    assert_eq!(png_size(&chain), (122, 64));
    // The latent walk: 4 digits in a row (122 × 32); only deterministic DDIM may decode it.
    let walk = tmp.path().join("walk.png");
    let (e, w) = (export.to_str().unwrap(), walk.to_str().unwrap());
    let o = ddpm(&[
        "sample",
        "--weights",
        e,
        "--n",
        "4",
        "--steps",
        "3",
        "--interpolate",
        "5",
        "--device",
        "cpu",
        "--out",
        w,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(png_size(&walk), (122, 32));
    let o = ddpm(&[
        "sample",
        "--weights",
        e,
        "--sampler",
        "ddpm",
        "--interpolate",
        "5",
        "--device",
        "cpu",
        "--out",
        w,
    ]);
    assert_fails_with(&o, "deterministic DDIM");
    let o = ddpm(&[
        "sample",
        "--weights",
        export.to_str().unwrap(),
        "--n",
        "1",
        "--sampler",
        "ddpm",
        "--variance",
        "beta",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Export in half precision: half the bytes, and it samples.
    let half = tmp.path().join("half");
    let o = ddpm(&[
        "export",
        "--weights",
        export.to_str().unwrap(),
        "--out",
        half.to_str().unwrap(),
        "--half",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (f32_len, f16_len) = (
        std::fs::metadata(export.join("model.bpk")).unwrap().len(),
        std::fs::metadata(half.join("model.bpk")).unwrap().len(),
    );
    assert!((f16_len as f64) < 0.6 * f32_len as f64, "{f16_len} vs {f32_len}");
    let o = ddpm(&[
        "sample",
        "--weights",
        half.to_str().unwrap(),
        "--n",
        "1",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad sampling arguments: one line, non-zero exit, no output file.
    let fresh = tmp.path().join("never.png");
    let w = export.to_str().unwrap();
    let f = fresh.to_str().unwrap();
    assert_fails_with(
        &ddpm(&["sample", "--weights", w, "--eta", "1.5", "--out", f, "--device", "cpu"]),
        "eta must be in [0, 1]",
    );
    assert_fails_with(
        &ddpm(&["sample", "--weights", w, "--steps", "0", "--out", f, "--device", "cpu"]),
        "at least 1",
    );
    assert_fails_with(
        &ddpm(&[
            "sample",
            "--weights",
            w,
            "--sampler",
            "plms",
            "--out",
            f,
            "--device",
            "cpu",
        ]),
        "unknown sampler 'plms'",
    );
    assert_fails_with(
        &ddpm(&[
            "sample",
            "--weights",
            w,
            "--sampler",
            "ddpm",
            "--steps",
            "20",
            "--out",
            f,
            "--device",
            "cpu",
        ]),
        "DDPM takes no number of steps",
    );
    assert_fails_with(
        &ddpm(&["sample", "--weights", w, "--n", "0", "--out", f, "--device", "cpu"]),
        "--n must be at least 1",
    );

    // Broken weights: truncated, random bytes, another architecture.
    let bad = tmp.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(export.join("config.json"), bad.join("config.json")).unwrap();
    let good = std::fs::read(export.join("model.bpk")).unwrap();
    std::fs::write(bad.join("model.bpk"), &good[..good.len() / 2]).unwrap();
    let b = bad.to_str().unwrap();
    assert_fails_with(
        &ddpm(&["sample", "--weights", b, "--out", f, "--device", "cpu"]),
        "weights do not fit",
    );
    let mut rng = NoiseRng::new(1);
    let noise: Vec<u8> = (0..good.len()).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(bad.join("model.bpk"), noise).unwrap();
    assert_fails_with(
        &ddpm(&["sample", "--weights", b, "--out", f, "--device", "cpu"]),
        "weights do not fit",
    );
    let config = std::fs::read_to_string(export.join("config.json"))
        .unwrap()
        .replace("\"base_channels\": 8", "\"base_channels\": 16");
    std::fs::write(bad.join("config.json"), config).unwrap();
    std::fs::write(bad.join("model.bpk"), &good).unwrap();
    assert_fails_with(
        &ddpm(&["sample", "--weights", b, "--out", f, "--device", "cpu"]),
        "weights do not fit",
    );
    std::fs::write(bad.join("config.json"), "{not json").unwrap();
    assert_fails_with(
        &ddpm(&["sample", "--weights", b, "--out", f, "--device", "cpu"]),
        "invalid model config",
    );
    assert!(!fresh.exists());
    assert!(
        std::fs::read_dir(tmp.path())
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp"))
    );

    // Missing and corrupt datasets.
    let missing = tmp.path().join("nowhere");
    let o = train_tiny(&missing, &tmp.path().join("run2"), "2", false);
    assert_fails_with(&o, "run scripts/setup.sh");
    std::fs::write(data.join("train-images-idx3-ubyte"), b"not an idx file at all").unwrap();
    let o = train_tiny(&data, &tmp.path().join("run3"), "2", false);
    assert_fails_with(&o, "not a valid IDX image file");
    assert!(!tmp.path().join("run3").join("checkpoint").exists());
}

fn png_size(path: &PathBuf) -> (u32, u32) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    (info.width, info.height)
}

#[test]
fn classifier_eval_and_plot_loss_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = tmp.path().join("run");
    let judge = tmp.path().join("classifier");
    write_tiny_dataset(&data);
    // The same images serve as the held-out split of this tiny dataset.
    for kind in ["images-idx3", "labels-idx1"] {
        std::fs::copy(
            data.join(format!("train-{kind}-ubyte")),
            data.join(format!("t10k-{kind}-ubyte")),
        )
        .unwrap();
    }
    let (data_s, judge_s) = (data.to_str().unwrap(), judge.to_str().unwrap());

    let o = ddpm(&[
        "classifier",
        "--data",
        data_s,
        "--out",
        judge_s,
        "--epochs",
        "2",
        "--batch",
        "8",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("epoch   2: held-out accuracy"), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(judge.join("classifier.json")).unwrap()).unwrap();
    assert_eq!(
        (record["epochs"].as_u64(), record["test_images"].as_u64()),
        (Some(2), Some(32))
    );
    assert!(judge.join("classifier.bpk").is_file());

    let o = train_tiny(&data, &run, "2", false);
    assert!(o.status.success(), "{}", stderr(&o));
    let weights = run.join("export");
    let report = tmp.path().join("eval.json");
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--weights",
            weights.to_str().unwrap(),
            "--classifier",
            judge_s,
            "--data",
            data_s,
        ];
        args.extend_from_slice(extra);
        ddpm(&args)
    };
    let o = eval(&[
        "--n",
        "4",
        "--samplers",
        "ddim3",
        "--bpd-images",
        "2",
        "--bpd-stride",
        "400",
        "--json",
        report.to_str().unwrap(),
        "--label",
        "tiny run, step 2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("real images (training split)") && out.contains("DDIM-3") && out.contains("bits/dim"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        json["weights"], "tiny run, step 2",
        "--label names the weights in the JSON"
    );
    let sets = json["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2);
    let runs = json["seeds"].as_array().unwrap().len();
    assert_eq!(runs, 2, "two runs by default, so every figure has a standard error");
    for set in sets {
        assert_eq!(set["n"], 4);
        assert_eq!(set["runs"].as_array().unwrap().len(), runs);
        assert_eq!(
            set["class_counts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .sum::<u64>(),
            4 * runs as u64
        );
        let entropy = set["class_entropy_bits"]["mean"].as_f64().unwrap();
        assert!((0.0..=10f64.log2() + 1e-9).contains(&entropy));
        assert!(set["frechet_distance"]["mean"].as_f64().unwrap().is_finite());
        assert!(set["frechet_distance"]["standard_error"].as_f64().unwrap() >= 0.0);
    }
    // The bound for both reverse-process variances.
    let nll = json["nll"].as_array().unwrap();
    let variances: Vec<&str> = nll.iter().map(|n| n["variance"].as_str().unwrap()).collect();
    assert_eq!(variances, ["beta-tilde", "beta"]);
    for n in nll {
        let bpd = n["bits_per_dim"]["mean"].as_f64().unwrap();
        assert!(bpd.is_finite() && bpd > 0.0, "{bpd}");
    }

    // Bad input: one clear line each.
    assert_fails_with(&eval(&["--samplers", "ddim-fast"]), "unknown sampler 'ddim-fast'");
    assert_fails_with(&eval(&["--n", "1"]), "at least 2");
    let missing = tmp.path().join("nowhere");
    let o = ddpm(&[
        "eval",
        "--weights",
        weights.to_str().unwrap(),
        "--classifier",
        missing.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "ddpm classifier");
    let o = ddpm(&["classifier", "--data", missing.to_str().unwrap(), "--out", judge_s]);
    assert_fails_with(&o, "run scripts/setup.sh");

    // The loss chart, from the run's loss.csv.
    let svg = tmp.path().join("loss.svg");
    let o = ddpm(&[
        "plot-loss",
        "--csv",
        run.join("loss.csv").to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
    let o = ddpm(&[
        "plot-loss",
        "--csv",
        missing.to_str().unwrap(),
        "--out",
        svg.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "reading");
}

/// The grey bytes of a PNG written by `sample --out-dir` (one 28 × 28 image).
fn png_pixels(path: &Path) -> Vec<u8> {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    buf
}

/// How much an image varies from row to row against from column to column: the variance of its
/// row means over that of its column means. A vertical bar of the toy set has equal row means (≈ 0);
/// a square varies both ways alike (≈ 1). A constant background offset changes neither.
fn row_to_column_variance(pixels: &[u8]) -> f64 {
    let var = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64
    };
    let rows: Vec<f64> = pixels
        .chunks(28)
        .map(|r| r.iter().map(|&p| p as f64).sum::<f64>() / 28.0)
        .collect();
    let cols: Vec<f64> = (0..28)
        .map(|x| (0..28).map(|y| pixels[y * 28 + x] as f64).sum::<f64>() / 28.0)
        .collect();
    var(&rows) / var(&cols).max(1e-9)
}

/// A toy conditional run (two classes, squares and bars) whose guided samples are of the class
/// asked for. 1,000 steps: the criterion below holds at seeds 0–3 (800 steps, enough before the
/// dropout masks were drawn per step on the host, left seed 0's bars half squares).
#[test]
fn a_conditional_run_learns_its_classes_and_samples_them_guided() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    std::fs::write(data.join("classes.txt"), "square\nbar\n").unwrap();
    let out = tmp.path().join("run");
    let flags = [
        "--conditional",
        "--steps",
        "1000",
        "--batch",
        "16",
        "--checkpoint-every",
        "1000",
        "--sample-every",
        "0",
        "--log-every",
        "50",
        "--warmup",
        "10",
        "--lr",
        "2e-3",
        "--lr-decay-from",
        "400",
        "--ema",
        "0.99",
    ];
    let o = train_with(&data, &out, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("export/config.json")).unwrap()).unwrap();
    assert_eq!(config["unet"]["num_classes"], 2);
    assert_eq!(config["class_names"], serde_json::json!(["square", "bar"]));
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(train["p_uncond"], 0.1);
    // Guided (w = 2) samples of each class, by name and by index (stochastic DDIM-100, η = 1).
    let ratios_of = |class: &str| -> Vec<f64> {
        let dir = tmp.path().join(format!("class-{class}"));
        let o = ddpm(&[
            "sample",
            "--weights",
            out.join("export").to_str().unwrap(),
            "--class",
            class,
            "--guidance",
            "2",
            "--n",
            "16",
            "--sampler",
            "ddim100-eta1",
            "--device",
            "cpu",
            "--out-dir",
            dir.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut ratios: Vec<f64> = (0..16)
            .map(|i| row_to_column_variance(&png_pixels(&dir.join(format!("{i:05}.png")))))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    };
    let (squares, bars) = (ratios_of("square"), ratios_of("1"));
    // Medians: a model that ignored the class would give both sets the same.
    assert!(
        squares[8] > 0.5 && bars[8] < 0.2,
        "row/column variance: squares {squares:?}, bars {bars:?}"
    );
    // A class the model does not have, and a class asked of an unconditional model, are refused.
    let o = ddpm(&[
        "sample",
        "--weights",
        out.join("export").to_str().unwrap(),
        "--class",
        "circle",
        "--out",
        tmp.path().join("x.png").to_str().unwrap(),
    ]);
    assert_fails_with(&o, "unknown class 'circle'");
    let o = ddpm(&[
        "sample",
        "--weights",
        concat!(env!("CARGO_MANIFEST_DIR"), "/assets/digits-unconditional"),
        "--class",
        "3",
        "--out",
        tmp.path().join("y.png").to_str().unwrap(),
    ]);
    assert_fails_with(&o, "unconditional");
    assert!(!tmp.path().join("x.png").exists() && !tmp.path().join("y.png").exists());
}

#[test]
fn a_diverging_run_stops_with_one_line_and_writes_no_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let out = tmp.path().join("run");
    let o = train_tiny_with(&data, &out, "200", false, &["--lr", "1e12", "--grad-clip", "0"]);
    assert_fails_with(&o, "training stopped at step");
    assert!(!out.join("export").exists(), "a diverged run exported weights");
}

#[test]
fn bad_counts_and_probabilities_are_refused_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let out = tmp.path().join("run");
    assert_fails_with(
        &train_tiny_with(&data, &out, "5", false, &["--dropout", "2"]),
        "--dropout",
    );
    assert_fails_with(
        &train_tiny_with(&data, &out, "5", false, &["--dropout=-0.1"]),
        "--dropout",
    );
    assert_fails_with(
        &train_with(&data, &out, &["--steps", "5", "--batch", "100000"]),
        "batch size",
    );
    assert_fails_with(
        &train_tiny_with(&data, &out, "5", false, &["--timesteps", "10000000"]),
        "timesteps",
    );
    assert_fails_with(
        &train_tiny_with(&data, &out, "5", false, &["--conditional", "--p-uncond", "1.5"]),
        "--p-uncond",
    );
    assert!(!out.join("checkpoint").exists());
    let png = tmp.path().join("s.png");
    let weights = concat!(env!("CARGO_MANIFEST_DIR"), "/assets");
    for (flag, value) in [
        ("--n", "0"),
        ("--n", "1000000000"),
        ("--batch", "0"),
        ("--batch", "5000"),
    ] {
        let o = ddpm(&[
            "sample",
            "--weights",
            weights,
            flag,
            value,
            "--out",
            png.to_str().unwrap(),
        ]);
        assert_fails_with(&o, flag);
    }
    let o = ddpm(&[
        "sample",
        "--weights",
        weights,
        "--guidance=-1",
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_fails_with(&o, "guidance");
    assert!(!png.exists());
}

/// A crash between the two renames of a checkpoint write leaves `checkpoint.old` (and maybe a
/// half-written `checkpoint.tmp`) and no `checkpoint`: resuming takes the fallback and ends with
/// the weights of a run never interrupted. Ctrl-C (SIGINT) writes a checkpoint where it stops,
/// and resuming from it ends the same way too.
#[test]
fn resumes_from_the_fallback_checkpoint_and_after_sigint_equal_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let whole = tmp.path().join("whole");
    let o = train_tiny(&data, &whole, "8", false);
    assert!(o.status.success(), "{}", stderr(&o));

    // The fallback: a crash after `checkpoint` became `checkpoint.old`, mid-way through the tmp.
    let crashed = tmp.path().join("crashed");
    let o = train_tiny(&data, &crashed, "4", false);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::rename(crashed.join("checkpoint"), crashed.join("checkpoint.old")).unwrap();
    std::fs::create_dir_all(crashed.join("checkpoint.tmp")).unwrap();
    std::fs::write(crashed.join("checkpoint.tmp/model.bpk"), b"half a file").unwrap();
    // …and a stale lock from the killed process (an id no process has).
    std::fs::write(crashed.join("train.lock"), "4194304\n").unwrap();
    let o = train_tiny(&data, &crashed, "8", true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!crashed.join("train.lock").exists(), "the lock outlived its run");

    // SIGINT: a long run stopped by Ctrl-C after a few steps, then resumed to the end.
    let stopped = tmp.path().join("stopped");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ddpm"))
        .args([
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            stopped.to_str().unwrap(),
        ])
        .args([
            "--steps",
            "8",
            "--batch",
            "4",
            "--checkpoint-every",
            "100",
            "--sample-every",
            "0",
            "--log-every",
            "1",
            "--warmup",
            "2",
        ])
        .args(TINY_MODEL)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the first logged step (a plain line: stderr is a pipe), then interrupt.
    let mut stderr_pipe = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    use std::io::BufRead;
    while stderr_pipe.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.starts_with("step 1/8") {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("step 1/8"), "no plain progress line: {seen}");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_pipe, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{seen}{rest}");
    assert!(rest.contains("stopped at step"), "{seen}{rest}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(stopped.join("checkpoint/state.json")).unwrap()).unwrap();
    let at = state["step"].as_u64().unwrap();
    assert!((1..8).contains(&at), "checkpoint at step {at}");
    let o = train_tiny(&data, &stopped, "8", true);
    assert!(o.status.success(), "{}", stderr(&o));

    for run in [&crashed, &stopped] {
        for f in ["checkpoint/model.bpk", "checkpoint/ema.bpk", "export/model.bpk"] {
            assert!(
                parameters(&whole, f) == parameters(run, f),
                "{f} of {} differs from the uninterrupted run",
                run.display()
            );
        }
    }
}

#[test]
fn a_second_run_is_kept_out_of_a_busy_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let out = tmp.path().join("run");
    std::fs::create_dir_all(&out).unwrap();
    // This test process is alive: its id in the lock means the folder is in use.
    std::fs::write(out.join("train.lock"), format!("{}\n", std::process::id())).unwrap();
    assert_fails_with(&train_tiny(&data, &out, "2", false), "in use by another training run");
    assert!(!out.join("checkpoint").exists());
    assert!(out.join("train.lock").exists(), "someone else's lock was removed");
}

/// A learning-rate change asked for on resume applies from the checkpoint's step, is recorded in
/// train.json, and a plain `--lr` on resume is still refused.
#[test]
fn a_learning_rate_change_on_resume_is_explicit_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_tiny_dataset(&data);
    let out = tmp.path().join("run");
    assert!(train_tiny(&data, &out, "4", false).status.success());
    assert_fails_with(
        &train_tiny_with(&data, &out, "6", true, &["--lr", "1e-4"]),
        "may change when resuming",
    );
    let o = train_tiny_with(&data, &out, "6", true, &["--lr", "1e-4", "--change-lr"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap();
    assert_eq!(train["lr_changes"], serde_json::json!([{"from_step": 4, "lr": 1e-4}]));
    // loss.csv's rates: 1e-4 then 2e-4 ×3 (warm-up over 2 steps at the default 2e-4), then 1e-4.
    let rates: Vec<f64> = std::fs::read_to_string(out.join("loss.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    let expected = [1e-4, 2e-4, 2e-4, 2e-4, 1e-4, 1e-4];
    assert_eq!(rates.len(), 6);
    for (g, e) in rates.iter().zip(expected) {
        assert!((g - e).abs() <= 1e-3 * e, "{rates:?}");
    }
    // Resuming again keeps the recorded change without repeating the flags.
    let o = train_tiny(&data, &out, "7", true);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A tiny unconditional run (4 steps) on the tiny two-class set, then a conditional run of `steps`
/// from its export with `extra` flags. Returns the data folder, the export started from and the
/// conditional run's folder.
fn conditional_from_plain(tmp: &Path, steps: &str, extra: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
    let data = tmp.join("data");
    write_tiny_dataset(&data);
    let plain = tmp.join("plain");
    let o = train_tiny(&data, &plain, "4", false);
    assert!(o.status.success(), "{}", stderr(&o));
    let (init, cond) = (plain.join("export"), tmp.join("cond"));
    let mut flags = vec!["--conditional", "--init-from", init.to_str().unwrap()];
    flags.extend_from_slice(extra);
    let o = train_tiny_with(&data, &cond, steps, false, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    (data, init, cond)
}

/// One 5-step sample (seed 3) from the model in `weights`, as PNG bytes: of `class` guided at
/// w = 1, or through "no class" without one.
fn draw_one(tmp: &Path, weights: &Path, class: Option<&str>) -> Vec<u8> {
    let out = tmp.join(format!("{}-{}", weights.display(), class.unwrap_or("none")).replace(['/', '\\'], "_"));
    let mut args = vec![
        "sample",
        "--weights",
        weights.to_str().unwrap(),
        "--n",
        "1",
        "--steps",
        "5",
    ];
    args.extend(["--seed", "3", "--device", "cpu", "--out-dir", out.to_str().unwrap()]);
    if let Some(class) = class {
        args.extend(["--class", class, "--guidance", "1"]);
    }
    let o = ddpm(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(out.join("00000.png")).unwrap()
}

/// A conditional run that starts from an unconditional model (`--init-from`) begins as that model
/// and learns its class embedding, in the trained weights and in their EMA (which the export is):
/// the same seed then draws different images for different classes. (The EMA pairs parameters by
/// id; a class embedding made apart from the model once left the EMA's at zero.)
#[test]
fn a_conditional_run_from_an_unconditional_model_learns_classes_in_its_ema() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, init, cond) = conditional_from_plain(tmp.path(), "40", &["--lr", "5e-3"]);
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cond.join("train.json")).unwrap()).unwrap();
    assert_eq!(train["init_from"], init.to_str().unwrap());
    // The export (the EMA) and the checkpoint's trained weights both tell the classes apart.
    let raw = tmp.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    std::fs::copy(cond.join("export/config.json"), raw.join("config.json")).unwrap();
    std::fs::copy(cond.join("checkpoint/model.bpk"), raw.join("model.bpk")).unwrap();
    for weights in [cond.join("export"), raw] {
        let (zero, one) = (
            draw_one(tmp.path(), &weights, Some("0")),
            draw_one(tmp.path(), &weights, Some("1")),
        );
        assert_ne!(zero, one, "{}", weights.display());
    }
}

/// `--network-lr-scale 0` learns the classes and leaves every other weight where `--init-from`
/// had it: the model given no class draws exactly what the unconditional model draws (the same
/// bytes for the same seed), and of the weights only the class rows moved.
#[test]
fn learning_only_the_class_embedding_keeps_the_unconditional_model_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let frozen = ["--network-lr-scale", "0", "--p-uncond", "0", "--lr", "5e-2"];
    let (data, init, cond) = conditional_from_plain(tmp.path(), "30", &frozen);
    let train: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cond.join("train.json")).unwrap()).unwrap();
    assert_eq!(train["network_lr_scale"], 0.0);
    let export = cond.join("export");
    let (after, before) = (draw_one(tmp.path(), &export, None), draw_one(tmp.path(), &init, None));
    assert_eq!(after, before, "∅ is the unconditional model, to the bit");
    // Tensor by tensor: only the class table moved (its class rows away from zero), the EMA's and
    // the trained weights' alike.
    let tensors = |file: &Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        let bytes = burn_pack::Bytes::from_bytes_vec(std::fs::read(file).unwrap());
        let reader = burn_pack::Reader::from_bytes(bytes).unwrap();
        let tensors = reader.into_tensors().unwrap().into_iter();
        tensors
            .map(|t| (t.name.clone(), t.into_bytes().unwrap().to_vec()))
            .collect()
    };
    let before = tensors(&init.join("model.bpk"));
    for file in [export.join("model.bpk"), cond.join("checkpoint/model.bpk")] {
        let mut after = tensors(&file);
        let table = after.keys().find(|n| n.contains("class_embed")).cloned().unwrap();
        let table = after.remove(&table).unwrap();
        assert_eq!(after, before, "{}: every other weight as it was", file.display());
        // A row per class (the tiny set's two) and ∅'s: the classes' rows moved from zero, ∅'s
        // (the last) did not.
        let classes = train["unet"]["num_classes"].as_u64().unwrap() as usize;
        assert_eq!(classes, 2);
        let row = table.len() / (classes + 1);
        let row_moved = |r: usize| table[r * row..(r + 1) * row].iter().any(|&b| b != 0);
        assert!((0..classes).all(row_moved) && !row_moved(classes), "{}", file.display());
    }
    // Without trained weights to keep, the flag means nothing: refused with the reason.
    let bare = tmp.path().join("bare");
    assert_fails_with(
        &train_tiny_with(&data, &bare, "2", false, &["--conditional", "--network-lr-scale", "0"]),
        "needs a conditional run from trained weights",
    );
}

/// `export --examples` writes the page's forward-panel images: two of each class from the
/// held-out split, first occurrences then second ones — the shipped 20 digits, byte for byte.
#[test]
fn export_writes_the_pages_real_images_of_a_dataset() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("page");
    let o = ddpm(&[
        "export",
        "--weights",
        "assets",
        "--out",
        out.to_str().unwrap(),
        "--half",
        "--examples",
        "data/mnist",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    for file in ["digits-images-idx3-ubyte", "digits-labels-idx1-ubyte"] {
        let written = std::fs::read(out.join(file)).unwrap();
        assert_eq!(
            written,
            std::fs::read(Path::new("assets").join(file)).unwrap(),
            "{file}"
        );
    }
    // A dataset that is not there: one line, and nothing written.
    let missing = tmp.path().join("missing");
    let o = ddpm(&[
        "export",
        "--weights",
        "assets",
        "--out",
        missing.to_str().unwrap(),
        "--examples",
        "data/none",
    ]);
    assert_fails_with(&o, "--examples");
    assert!(!missing.exists());
}

/// Twelve 20 × 20 colour pictures in two class folders: `reds/` (a red square on black at a
/// place that moves with the index) and `blues/` (the same in blue).
fn write_tiny_rgb_folder(dir: &Path) {
    write_rgb_squares(dir, 0..6);
}

/// [`write_tiny_rgb_folder`]'s pictures for the indices `range`, in each class.
fn write_rgb_squares(dir: &Path, range: std::ops::Range<u32>) {
    for (class, colour) in [("reds", [255, 40, 40]), ("blues", [40, 40, 255])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in range.clone() {
            let picture = image::RgbImage::from_fn(20, 20, |x, y| {
                let inside = (x + 20 - 2 * i) % 20 < 8 && (y + i) % 20 < 8;
                image::Rgb(if inside { colour } else { [0, 0, 0] })
            });
            picture.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// The colour type and size of a PNG file.
fn png_colour_and_size(path: &Path) -> (png::ColorType, (u32, u32)) {
    let reader = png::Decoder::new(std::fs::File::open(path).unwrap())
        .read_info()
        .unwrap();
    (reader.info().color_type, (reader.info().width, reader.info().height))
}

/// A folder of RGB pictures trains a conditional colour model at 16 × 16 (the shape recorded in
/// config.json), a run stopped and resumed (reading its pictures from the files) equals the
/// uninterrupted one bit for bit, and its
/// sample grids and `sample`'s pictures are RGB PNGs.
#[test]
fn a_tiny_rgb_run_from_an_image_folder_trains_resumes_bit_for_bit_and_samples_in_colour() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pictures");
    write_tiny_rgb_folder(&data);
    let (whole, split) = (tmp.path().join("whole"), tmp.path().join("split"));
    let flags = ["--image-size", "16", "--conditional"];
    let o = train_tiny_with(&data, &whole, "6", false, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("training on 12 images (16×16, RGB)"),
        "{}",
        stderr(&o)
    );
    let o = train_tiny_with(&data, &split, "3", false, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    // Resumed with no memory for the pictures: each batch is read from its files, to the same bits.
    let o = train_tiny_with(&data, &split, "6", true, &["--data-memory", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("each batch is read from its files"),
        "{}",
        stderr(&o)
    );
    for f in ["checkpoint/model.bpk", "checkpoint/ema.bpk", "export/model.bpk"] {
        assert!(parameters(&whole, f) == parameters(&split, f), "{f} differs");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("export/config.json")).unwrap()).unwrap();
    assert_eq!(config["unet"]["image_channels"], 3);
    assert_eq!(config["unet"]["image_size"], 16);
    assert_eq!(config["class_names"], serde_json::json!(["blues", "reds"]));
    // The training grid: two rows of the two classes, 16 px images with 2 px of border.
    let grid = whole.join("samples/step_0000003.png");
    assert_eq!(
        png_colour_and_size(&grid),
        (png::ColorType::Rgb, (2 + 2 * 18, 2 + 2 * 18))
    );
    let out = tmp.path().join("classes.png");
    let (e, p) = (whole.join("export"), out.to_str().unwrap().to_string());
    let o = ddpm(&[
        "sample",
        "--weights",
        e.to_str().unwrap(),
        "--class",
        "all",
        "--n",
        "3",
        "--steps",
        "4",
        "--out",
        &p,
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        png_colour_and_size(&out),
        (png::ColorType::Rgb, (2 + 3 * 18, 2 + 2 * 18))
    );
    // The page's folder: the examples come from the pictures, two per class, as 16 × 16 colour
    // (IDX with four dimensions); grey 28 × 28 examples do not fit this model and write nothing.
    let export_examples = |out: &Path, examples: &Path| {
        let (w, o, x) = (e.to_str().unwrap(), out.to_str().unwrap(), examples.to_str().unwrap());
        ddpm(&["export", "--weights", w, "--out", o, "--half", "--examples", x])
    };
    let page = tmp.path().join("page");
    let o = export_examples(&page, &data);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(page.join("digits-images-idx3-ubyte")).unwrap();
    let examples = ddpm_explorer::data::parse_idx_images(&bytes, "examples").unwrap();
    assert_eq!((examples.len(), examples.channels, examples.rows), (4, 3, 16));
    let idx = tmp.path().join("idx");
    write_tiny_dataset(&idx);
    for kind in ["images-idx3", "labels-idx1"] {
        let train = idx.join(format!("train-{kind}-ubyte"));
        std::fs::copy(&train, idx.join(format!("t10k-{kind}-ubyte"))).unwrap();
    }
    let elsewhere = tmp.path().join("not-written");
    let o = export_examples(&elsewhere, &idx);
    assert_fails_with(&o, "the model draws [3, 16, 16]");
    assert!(!elsewhere.exists());
    // A size the network cannot halve to its levels, or outside 16–128, is refused.
    let o = train_tiny_with(&data, &tmp.path().join("odd"), "2", false, &["--image-size", "17"]);
    assert_fails_with(&o, "image size 17");
    let o = train_tiny_with(&data, &tmp.path().join("big"), "2", false, &["--image-size", "256"]);
    assert_fails_with(&o, "--image-size must be from 16 to 128");
    // IDX files keep their size: a preset or a size of another one is refused, not ignored.
    let o = train_tiny_with(&idx, &tmp.path().join("cifar"), "2", false, &["--preset", "cifar10"]);
    assert_fails_with(&o, "holds 28×28 images, not 32×32");
}

/// A classifier for colour pictures, trained on one image folder and measured on another, judges
/// a colour model: red squares are told from blue ones every time (the two classes differ in
/// every lit pixel), and `eval` reports the yardstick, the samples, the classes asked for and
/// the memorisation check against the held-out folder. A classifier of another shape, and an
/// image folder without a held-out one, are refused with one line.
#[test]
fn the_classifier_and_eval_judge_a_colour_model_between_two_image_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, held_out, judge) = (
        tmp.path().join("train"),
        tmp.path().join("held-out"),
        tmp.path().join("judge"),
    );
    write_rgb_squares(&train, 0..6);
    write_rgb_squares(&held_out, 6..12);
    let (train_s, held_s, judge_s) = (
        train.to_str().unwrap(),
        held_out.to_str().unwrap(),
        judge.to_str().unwrap(),
    );
    let classifier = |extra: &[&str]| {
        let mut args = vec!["classifier", "--data", train_s, "--out", judge_s, "--image-size", "16"];
        args.extend_from_slice(extra);
        ddpm(&args)
    };
    let o = classifier(&["--held-out", held_s, "--epochs", "60", "--batch", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("[3, 16, 16]"), "{}", stderr(&o));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(judge.join("classifier.json")).unwrap()).unwrap();
    assert_eq!(record["config"]["image_shape"], serde_json::json!([3, 16, 16]));
    assert_eq!(
        (record["config"]["classes"].as_u64(), record["test_images"].as_u64()),
        (Some(2), Some(12))
    );
    assert_eq!(
        record["test_accuracy"].as_f64(),
        Some(1.0),
        "red told from blue: {}",
        stderr(&o)
    );

    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgb-tiny");
    let report = tmp.path().join("eval.json");
    let eval = |classifier: &str, extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--weights",
            weights.to_str().unwrap(),
            "--classifier",
            classifier,
            "--data",
            train_s,
        ];
        args.extend_from_slice(extra);
        ddpm(&args)
    };
    // Four DDIM-3 samples per set, judged against the held-out folder.
    let tiny_sets = ["--held-out", held_s, "--n", "4", "--runs", "1", "--samplers", "ddim3"];
    let o = eval(
        judge_s,
        &[
            &tiny_sets[..],
            &["--guidance", "0", "--bpd-images", "2", "--bpd-stride", "400"],
            &["--json", report.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["reference_images"], 12);
    let sets = json["sets"].as_array().unwrap();
    assert_eq!(sets.len(), 2, "the yardstick and DDIM-3");
    for set in sets {
        assert_eq!(set["class_counts"].as_array().unwrap().len(), 2);
        assert!(set["frechet_distance"]["mean"].as_f64().unwrap().is_finite());
    }
    let guided = json["guided"].as_array().unwrap();
    assert_eq!(guided.len(), 1);
    let share = guided[0]["requested_class_share"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&share));
    assert_eq!(json["memorisation"].as_array().unwrap().len(), 2);
    assert_eq!(json["nll"].as_array().unwrap().len(), 2);
    // `--guidance none`: the samples without a class alone.
    let ddim3_unguided = [&tiny_sets[..], &["--bpd-images", "0"]].concat();
    let o = eval(
        judge_s,
        &[
            &ddim3_unguided[..],
            &["--guidance", "none", "--json", report.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["sets"].as_array().unwrap().len(), 2, "the yardstick and DDIM-3");
    assert_eq!(json["guided"].as_array().map_or(0, Vec::len), 0, "no guided set");
    assert_fails_with(
        &eval(judge_s, &[&ddim3_unguided[..], &["--guidance", "0,strong"]].concat()),
        "`strong` is not a guidance scale",
    );

    // The MNIST classifier does not judge colour; a folder needs a held-out folder; classes differ.
    let mnist_judge = Path::new(env!("CARGO_MANIFEST_DIR")).join("training/classifier");
    assert_fails_with(
        &eval(mnist_judge.to_str().unwrap(), &[]),
        "judges images of [1, 28, 28]",
    );
    assert_fails_with(&eval(judge_s, &[]), "no held-out split");
    assert_fails_with(&classifier(&[]), "no held-out split");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("greens")).unwrap();
    std::fs::copy(train.join("reds/0.png"), other.join("greens/0.png")).unwrap();
    assert_fails_with(
        &eval(judge_s, &["--held-out", other.to_str().unwrap()]),
        "the same class folders",
    );
}
