//! The U-Net through the public API: shapes, size, and the weights round trip the web app relies on.

mod common;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use ddpm_explorer::diffusion::schedule::ScheduleKind;
use ddpm_explorer::model::weights::{DiffusionConfig, WeightsError};
use ddpm_explorer::model::{Preset, SkipLayout, UNetConfig, UNetConfigError};
use ddpm_explorer::rng::NoiseRng;

fn input(batch: usize, device: &Device) -> Tensor<4> {
    let mut rng = NoiseRng::new(4);
    Tensor::from_data(TensorData::new(rng.normal_vec(batch * 784), [batch, 1, 28, 28]), device)
}

#[test]
fn default_unet_has_one_to_two_million_parameters_and_keeps_the_shape() {
    let device = Device::flex();
    let unet = UNetConfig::new().init(&device);
    let n = unet.num_params();
    assert!((1_000_000..=2_000_000).contains(&n), "{n} parameters");
    let out = unet.forward(input(3, &device), &[0, 500, 999]);
    assert_eq!(out.dims(), [3, 1, 28, 28]);
}

#[test]
fn a_fresh_unet_predicts_zero_noise() {
    // The output convolution starts at zero (as in Ho et al.'s code), so ε̂ = 0 before training.
    let device = Device::flex();
    let out = UNetConfig::new().init(&device).forward(input(1, &device), &[10]);
    assert_eq!(out.abs().max().into_scalar::<f32>(), 0.0);
}

#[test]
fn timesteps_change_the_prediction_per_image() {
    let device = Device::flex();
    // A non-zero output layer, so the time embedding's effect is visible.
    let config = UNetConfig::new()
        .with_base_channels(8)
        .with_channel_mult(vec![1, 2])
        .with_res_blocks(1);
    let unet = common::perturbed(config.init(&device), 2);
    let x = input(1, &device);
    let x2 = Tensor::cat(vec![x.clone(), x.clone()], 0);
    let out = unet.forward(x2, &[0, 999]).into_data();
    let v = out.as_slice::<f32>().unwrap();
    let diff: f32 = v[..784].iter().zip(&v[784..]).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-3, "t had no effect ({diff})");
    // And one image's result does not depend on its batch neighbours.
    let single = unet.forward(x, &[0]).into_data();
    for (a, b) in single.as_slice::<f32>().unwrap().iter().zip(&v[..784]) {
        assert!((a - b).abs() < 1e-4);
    }
}

/// Parameters of a ResBlock from `c_in` to `c_out` channels with a time embedding of `embed`,
/// counted by hand from its layers: GroupNorm (scale, shift), 3×3 conv, time projection, GroupNorm,
/// 3×3 conv, and a 1×1 conv on the skip when the channel count changes.
fn res_block_params(c_in: usize, c_out: usize, embed: usize) -> usize {
    let skip = if c_in == c_out { 0 } else { c_in * c_out + c_out };
    2 * c_in + (9 * c_in * c_out + c_out) + (embed * c_out + c_out) + 2 * c_out + (9 * c_out * c_out + c_out) + skip
}

#[test]
fn ho_et_al_skip_layout_adds_a_decoder_block_per_level_fed_by_every_encoder_stage() {
    // Channels 8/16, one ResBlock per level, time embedding 32. Per level, the decoder's blocks
    // are 32→16 (16 from below + the 16 of level 1's output) and 24→8. Per block (Ho et al.), the
    // encoder leaves skips of 8 (input conv), 8 (level 0's block), 8 (downsampler), 16 (level 1's
    // block), taken last first: level 1's decoder runs 16+16→16 and 16+8→16, level 0's 16+8→8 and
    // 8+8→8. So the per-block net has two more blocks, 24→16 and 16→8, and nothing else changes.
    let device = Device::flex();
    let per_level = common::tiny_unet_config();
    assert_eq!(per_level.skip_layout(), SkipLayout::PerLevel);
    let per_block = per_level.clone().with_skips(Some(SkipLayout::PerBlock));
    let extra = res_block_params(24, 16, 32) + res_block_params(16, 8, 32);
    assert_eq!(extra, 6800 + 2192);
    let unet = common::perturbed(per_block.init(&device), 5);
    assert_eq!(unet.num_params(), per_level.init(&device).num_params() + extra);
    // The channels line up at every concatenation (a mismatch would panic), and the output keeps
    // the input's shape and depends on t.
    let x = input(1, &device);
    let out = unet.forward(Tensor::cat(vec![x.clone(), x], 0), &[0, 999]).into_data();
    let v = out.as_slice::<f32>().unwrap();
    assert_eq!(v.len(), 2 * 784);
    let diff: f32 = v[..784].iter().zip(&v[784..]).map(|(a, b)| (a - b).abs()).sum();
    assert!(diff > 1e-3, "t had no effect ({diff})");
}

/// Parameters of a self-attention block on `c` channels, counted by hand: GroupNorm (scale,
/// shift), the q, k, v and output 1×1 projections (each c·c weights and c biases).
fn attention_params(c: usize) -> usize {
    2 * c + 4 * (c * c + c)
}

#[test]
fn attention_sits_after_every_resblock_at_the_resolutions_named() {
    // 28 × 28 with channels 8/16: level 0 is 28 × 28, level 1 is 14 × 14. Without a list, one
    // attention block sits at the lowest level in the encoder and one in the decoder (plus the
    // bottleneck's). Naming 28 moves attention to level 0, after each of its one encoder and one
    // decoder ResBlock, and takes it off level 1: + 2 blocks on 8 channels − 2 on 16.
    let device = Device::flex();
    let plain = common::tiny_unet_config();
    let named = plain.clone().with_attention_resolutions(Some(vec![28]));
    let expected = plain.init(&device).num_params() + 2 * attention_params(8) - 2 * attention_params(16);
    let unet = common::perturbed(named.init(&device), 3);
    assert_eq!(unet.num_params(), expected);
    let out = unet.forward(input(2, &device), &[5, 900]);
    assert_eq!(out.dims(), [2, 1, 28, 28]);
    // A resolution no level has is refused by name.
    let bad = plain.with_attention_resolutions(Some(vec![16]));
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("attention resolution 16")
    );
}

#[test]
fn the_cifar10_preset_is_ho_et_als_35_7_million_parameter_net() {
    // Ho et al. 2020, Appendix B: "Our CIFAR10 model has 35.7 million parameters".
    let config = Preset::Cifar10.unet();
    let unet = config.init(&Device::flex());
    assert_eq!(
        (unet.num_params() as f64 / 1e5).round() as usize,
        357,
        "{}",
        unet.num_params()
    );
    assert_eq!(Preset::Mnist.unet(), UNetConfig::new());
    // It runs on 32 × 32 RGB images.
    let x = NoiseRng::new(1).normal_tensor([1, 3, 32, 32], &Device::flex());
    assert_eq!(unet.forward(x, &[10]).dims(), [1, 3, 32, 32]);
}

#[test]
fn the_skip_layout_is_part_of_the_architecture_in_config_json() {
    let device = Device::flex();
    let per_level = DiffusionConfig {
        unet: common::tiny_unet_config(),
        schedule: ScheduleKind::Linear,
        timesteps: 1000,
        class_names: None,
    };
    // A config.json from before the choice existed (no "skips") is the per-level layout.
    let mut json: serde_json::Value = serde_json::from_str(&per_level.to_json()).unwrap();
    json["unet"].as_object_mut().unwrap().remove("skips");
    let old = DiffusionConfig::from_json(&json.to_string()).unwrap();
    assert_eq!(old.unet.skip_layout(), SkipLayout::PerLevel);
    // Written and read back, the per-block layout stays per block, and a per-level net's weights
    // do not load into it.
    let mut per_block = per_level.clone();
    per_block.unet.skips = Some(SkipLayout::PerBlock);
    assert!(per_block.to_json().contains(r#""skips": "per-block""#));
    assert_eq!(DiffusionConfig::from_json(&per_block.to_json()).unwrap(), per_block);
    let bytes = ddpm_explorer::model::weights::unet_to_bytes(per_level.unet.init(&device)).unwrap();
    assert!(matches!(
        per_block.load_unet(bytes, &device),
        Err(WeightsError::Weights { .. })
    ));
}

/// A small model with live (jittered) weights, and its config.
fn small_trained_model(device: &Device) -> (DiffusionConfig, ddpm_explorer::model::UNet) {
    let unet_config = common::tiny_unet_config();
    let config = DiffusionConfig {
        unet: unet_config.clone(),
        schedule: ScheduleKind::Cosine,
        timesteps: 1000,
        class_names: None,
    };
    (config, common::perturbed(unet_config.init(device), 2))
}

#[test]
fn weights_round_trip_through_bytes_and_reject_other_architectures() {
    let device = Device::flex();
    let (config, unet) = small_trained_model(&device);
    let x = input(2, &device);
    let want = unet.forward(x.clone(), &[3, 700]).into_data();
    let bytes = ddpm_explorer::model::weights::unet_to_bytes(unet).unwrap();
    let json = config.to_json();
    let loaded_config = DiffusionConfig::from_json(&json).unwrap();
    assert_eq!(loaded_config, config);
    let loaded = loaded_config.load_unet(bytes.clone(), &device).unwrap();
    let got = loaded.forward(x, &[3, 700]).into_data();
    assert_eq!(got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());

    let other = DiffusionConfig {
        unet: config.unet.clone().with_base_channels(16),
        ..config.clone()
    };
    assert!(matches!(
        other.load_unet(bytes.clone(), &device),
        Err(WeightsError::Weights { .. })
    ));
    assert!(matches!(
        config.load_unet(bytes[..100].to_vec(), &device),
        Err(WeightsError::Weights { .. })
    ));
    assert!(matches!(
        config.load_unet(vec![7; 5000], &device),
        Err(WeightsError::Weights { .. })
    ));
    assert!(matches!(DiffusionConfig::from_json("{}"), Err(WeightsError::Config(_))));
}

#[test]
fn half_precision_weights_are_half_the_size_and_load_back() {
    let device = Device::flex();
    let (config, unet) = small_trained_model(&device);
    let full = ddpm_explorer::model::weights::unet_to_bytes(unet.clone()).unwrap();
    let half = ddpm_explorer::model::weights::unet_to_half_bytes(&unet).unwrap();
    let ratio = half.len() as f64 / full.len() as f64;
    assert!(ratio < 0.6, "f16 file is {ratio:.2} of the f32 one");
    let x = input(2, &device);
    let want = unet.forward(x.clone(), &[5, 500]).into_data();
    let got = config
        .load_unet(half, &device)
        .unwrap()
        .forward(x, &[5, 500])
        .into_data();
    let worst = want
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .zip(got.as_slice::<f32>().unwrap())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // f16 keeps 11 significant bits: relative error ≈ 5e-4 per weight.
    assert!(
        worst > 0.0 && worst < 2e-2,
        "f16 round trip changed the output by {worst}"
    );
}

#[test]
fn invalid_configs_are_errors() {
    assert_eq!(
        UNetConfig::new()
            .with_image_size(30)
            .with_channel_mult(vec![1, 2, 2])
            .validate(),
        Err(UNetConfigError::TooSmall { size: 30, levels: 3 })
    );
    assert_eq!(
        UNetConfig::new().with_base_channels(0).validate(),
        Err(UNetConfigError::Zero("base_channels"))
    );
}

#[test]
fn the_shipped_weights_decode_into_their_architecture() {
    // What the web app and `sample` load by default: config.json + model.bpk in assets/.
    let device = Device::flex();
    let assets = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let (config, unet) =
        ddpm_explorer::model::weights::load_model(&assets, &device).expect("assets/ holds a valid model");
    assert_eq!((config.unet.image_size, config.timesteps), (28, 1000));
    assert_eq!(config.unet.skip_layout(), SkipLayout::PerLevel);
    let out = unet.forward(input(2, &device), &[999, 0]).into_data();
    let v = out.as_slice::<f32>().unwrap();
    assert_eq!(v.len(), 2 * 784);
    assert!(v.iter().all(|x| x.is_finite()));
    // A trained ε-predictor is not the zero function it starts as.
    assert!(v.iter().any(|x| x.abs() > 1e-3));
}

/// `unet` with one weight of its input convolution set to `value`.
fn with_one_weight(unet: ddpm_explorer::model::UNet, value: f32) -> ddpm_explorer::model::UNet {
    use burn::module::{ModuleMapper, Param};
    struct Poison(bool, f32);
    impl ModuleMapper for Poison {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if self.0 || D != 4 {
                return param;
            }
            self.0 = true;
            let value = self.1;
            param.map(|t| {
                let shape = t.shape();
                let mut v = t.into_data().try_to_vec::<f32>().unwrap();
                v[0] = value;
                Tensor::from_data(TensorData::new(v, shape), &Device::flex())
            })
        }
    }
    unet.map(&mut Poison(false, value))
}

#[test]
fn weights_holding_nan_or_infinity_are_refused_at_load_in_f32_and_f16() {
    let device = Device::flex();
    let (config, unet) = small_trained_model(&device);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let poisoned = with_one_weight(unet.clone(), bad);
        let full = ddpm_explorer::model::weights::unet_to_bytes(poisoned.clone()).unwrap();
        let half = ddpm_explorer::model::weights::unet_to_half_bytes(&poisoned).unwrap();
        for bytes in [full, half] {
            let err = config.load_unet(bytes, &device).unwrap_err();
            assert!(matches!(err, WeightsError::NonFinite { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("NaN or infinite"), "{err}");
        }
    }
    // A large finite weight (65,000 is below f16's largest, 65,504) still loads.
    let big = ddpm_explorer::model::weights::unet_to_half_bytes(&with_one_weight(unet, 65_000.0)).unwrap();
    assert!(config.load_unet(big, &device).is_ok());
}

#[test]
fn bounds_and_dropout_are_checked_in_the_config() {
    let too_big = UNetConfig::new().with_base_channels(100_000).validate();
    assert!(matches!(
        too_big,
        Err(UNetConfigError::TooLarge {
            name: "base_channels",
            ..
        })
    ));
    assert_eq!(
        UNetConfig::new().with_dropout(2.0).validate(),
        Err(UNetConfigError::Dropout(2.0))
    );
    assert_eq!(
        UNetConfig::new().with_dropout(-0.1).validate(),
        Err(UNetConfigError::Dropout(-0.1))
    );
    assert!(UNetConfig::new().with_dropout(0.0).validate().is_ok());
    // A config.json asking for a network of terabytes is one error, not an allocation.
    let json = r#"{"unet":{"image_channels":1,"image_size":28,"base_channels":32,"channel_mult":[1,2,2],
        "res_blocks":1000000,"groups":8,"dropout":0.1},"schedule":"linear","timesteps":1000}"#;
    assert!(matches!(
        DiffusionConfig::from_json(json),
        Err(WeightsError::Architecture(UNetConfigError::TooLarge {
            name: "res_blocks",
            ..
        }))
    ));
}

#[test]
fn an_unconditional_config_loads_unchanged_and_a_zero_class_embedding_changes_nothing() {
    let device = Device::flex();
    let (config, unet) = small_trained_model(&device);
    // config.json as written before conditioning existed: no num_classes, no class_names.
    let json = config.to_json();
    assert!(
        !json.contains("num_classes") || json.contains("\"num_classes\": null"),
        "{json}"
    );
    assert!(!json.contains("class_names"), "{json}");
    let loaded = DiffusionConfig::from_json(&json).unwrap();
    assert_eq!(loaded.unet.num_classes, None);
    let bytes = ddpm_explorer::model::weights::unet_to_bytes(unet.clone()).unwrap();
    let plain = loaded.load_unet(bytes, &device).unwrap();
    assert_eq!(plain.num_classes(), None);
    // Made conditional with a zero class embedding, every class (and ∅) predicts exactly what the
    // unconditional network predicts: x + 0 is x.
    let x = input(3, &device);
    let want = plain.forward(x.clone(), &[10, 400, 990]).into_data();
    let conditional = plain.with_zero_class_embedding(10, &device);
    assert_eq!(conditional.num_classes(), Some(10));
    for classes in [[Some(0), Some(5), Some(9)], [None, None, None]] {
        let got = conditional
            .forward_classes(x.clone(), &[10, 400, 990], Some(&classes))
            .into_data();
        assert_eq!(got.as_slice::<f32>().unwrap(), want.as_slice::<f32>().unwrap());
    }
    // A conditional config round-trips with its class names; names that do not match are refused.
    let cond = DiffusionConfig {
        unet: config.unet.clone().with_num_classes(Some(2)),
        class_names: Some(vec!["square".into(), "bar".into()]),
        ..config.clone()
    };
    assert_eq!(DiffusionConfig::from_json(&cond.to_json()).unwrap(), cond);
    assert_eq!(cond.class_names(), ["square", "bar"]);
    let wrong = DiffusionConfig {
        class_names: Some(vec!["one".into()]),
        ..cond
    };
    assert!(matches!(
        DiffusionConfig::from_json(&wrong.to_json()),
        Err(WeightsError::Config(_))
    ));
}

/// Loading never panics, whatever the bytes: every truncation of a valid file, the header's bytes
/// flipped one at a time, and random bytes are each an error (the page relies on this: a panic in
/// wasm would abort the module, not unwind).
#[test]
fn no_bytes_make_loading_panic() {
    let device = Device::flex();
    let (config, unet) = small_trained_model(&device);
    let bytes = ddpm_explorer::model::weights::unet_to_half_bytes(&unet).unwrap();
    let loads = |b: Vec<u8>| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ddpm_explorer::model::weights::check_finite(&b).and_then(|_| config.load_unet(b, &device).map(drop))
        }))
    };
    let step = (bytes.len() / 200).max(1);
    for len in (0..bytes.len()).step_by(step).chain([bytes.len() - 1]) {
        let result = loads(bytes[..len].to_vec());
        assert!(matches!(result, Ok(Err(_))), "a file cut at {len} bytes: {result:?}");
    }
    for i in 0..bytes.len().min(512) {
        let mut flipped = bytes.clone();
        flipped[i] ^= 0xff;
        assert!(loads(flipped).is_ok(), "flipping byte {i} panicked");
    }
    let mut rng = NoiseRng::new(11);
    for len in [0usize, 1, 7, 8, 16, 64, 1000, 100_000] {
        let random: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        assert!(matches!(loads(random), Ok(Err(_))), "{len} random bytes");
    }
}

/// The page's list of models names folders that hold a model, with the size of its weights where
/// it gives one (the progress line divides by it).
#[test]
fn the_pages_list_of_models_matches_the_shipped_files() {
    let json = std::fs::read_to_string("assets/models.json").unwrap();
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    let models = list["models"].as_array().unwrap();
    assert!(!models.is_empty());
    for m in models {
        let dir = std::path::Path::new("assets").join(m["dir"].as_str().unwrap_or(""));
        let size = std::fs::metadata(dir.join("model.bpk")).unwrap().len();
        // Optional (the progress line then shows the bytes without a total), right when given.
        if let Some(listed) = m["weights_bytes"].as_u64() {
            assert_eq!(listed, size, "{m}");
        }
        let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
        assert!(DiffusionConfig::from_json(&config).is_ok(), "{m}");
    }
}
