//! The browser's model engine: a burn device (WebGPU, or the CPU backend when WebGPU is missing),
//! the trained U-Net and its configuration, all fetched from the page's own origin.

use crate::data::{ImageDataset, parse_idx_images, parse_idx_labels};
use crate::model::UNet;
use crate::model::weights::{CONFIG_FILE, DiffusionConfig, WEIGHTS_FILE};
use crate::view_state::BackendPreference;
use burn::tensor::Device;
use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Where the app's files are served from, relative to the page.
pub const ASSETS: &str = "assets";
/// The real digits the forward panel starts from (IDX format, as MNIST ships).
pub const DIGIT_IMAGES: &str = "digits-images-idx3-ubyte";
/// Their labels.
pub const DIGIT_LABELS: &str = "digits-labels-idx1-ubyte";

/// Which backend runs the model, in words for the badge.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    /// True when a WebGPU adapter runs the model.
    pub webgpu: bool,
    /// Adapter description, e.g. "nvidia ampere" or "google swiftshader (CPU emulation)".
    pub adapter: String,
    /// Why the CPU is used, when it is.
    pub fallback_reason: Option<String>,
}

impl BackendInfo {
    /// The badge's text.
    pub fn label(&self) -> String {
        match (&self.fallback_reason, self.webgpu) {
            (None, true) => format!("WebGPU · {}", self.adapter),
            (Some(reason), _) => format!("CPU (burn flex) · {reason}"),
            (None, false) => "CPU (burn flex)".to_string(),
        }
    }
}

/// Everything the panels need to run the model.
pub struct Engine {
    /// Where tensors live.
    pub device: Device,
    /// What that device is.
    pub backend: BackendInfo,
    /// The trained network.
    pub unet: UNet,
    /// Its architecture and schedule.
    pub config: DiffusionConfig,
    /// Real digits for the forward panel.
    pub digits: ImageDataset,
}

/// An adapter's description, and whether it is software (CPU emulation).
struct AdapterInfo {
    name: String,
    software: bool,
}

/// Reads `navigator.gpu` and describes the adapter the browser would grant, without keeping it.
async fn describe_adapter() -> Result<AdapterInfo, String> {
    let navigator = web_sys::window().ok_or("no window")?.navigator();
    let gpu = Reflect::get(&navigator, &JsValue::from_str("gpu")).map_err(|_| "navigator.gpu unreadable")?;
    if gpu.is_undefined() || gpu.is_null() {
        return Err("this browser has no WebGPU".into());
    }
    let request = Reflect::get(&gpu, &JsValue::from_str("requestAdapter"))
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or("navigator.gpu.requestAdapter is missing")?;
    let promise: js_sys::Promise = request
        .call0(&gpu)
        .map_err(|_| "requestAdapter failed")?
        .dyn_into()
        .map_err(|_| "requestAdapter returned no promise")?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|_| "requestAdapter was rejected")?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err("the browser granted no WebGPU adapter".into());
    }
    let info = Reflect::get(&adapter, &JsValue::from_str("info")).unwrap_or(JsValue::UNDEFINED);
    let field = |name: &str| {
        Reflect::get(&info, &JsValue::from_str(name))
            .ok()
            .and_then(|v| v.as_string())
            .filter(|s| !s.is_empty())
    };
    let fallback = Reflect::get(&adapter, &JsValue::from_str("isFallbackAdapter"))
        .ok()
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
        || Reflect::get(&info, &JsValue::from_str("isFallbackAdapter"))
            .ok()
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
    let mut name = [field("vendor"), field("architecture"), field("description")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if name.is_empty() {
        name = "adapter".into();
    }
    let software = crate::adapter::is_software_adapter(&name, fallback);
    if software {
        name.push_str(" (CPU emulation)");
    }
    Ok(AdapterInfo { name, software })
}

/// Picks the device: WebGPU through burn's wgpu backend when the browser grants a hardware adapter,
/// else burn's CPU backend with the reason, for the badge. Never fails.
pub async fn select_device(preference: BackendPreference) -> (Device, BackendInfo) {
    if preference == BackendPreference::Cpu {
        return cpu_fallback("chosen with ?backend=cpu".into());
    }
    match describe_adapter().await {
        Ok(adapter) if adapter.software && preference == BackendPreference::Auto => cpu_fallback(format!(
            "the only WebGPU adapter is {}, slower than the CPU backend (?backend=webgpu uses it anyway)",
            adapter.name
        )),
        Ok(adapter) => match Device::wgpu_options().init_async().await {
            Ok(device) => (
                device,
                BackendInfo {
                    webgpu: true,
                    adapter: adapter.name,
                    fallback_reason: None,
                },
            ),
            Err(e) => cpu_fallback(format!("WebGPU failed to start ({e})")),
        },
        Err(reason) => cpu_fallback(reason),
    }
}

/// burn's CPU backend, with the reason it is used.
pub fn cpu_fallback(reason: String) -> (Device, BackendInfo) {
    (
        Device::flex(),
        BackendInfo {
            webgpu: false,
            adapter: "cpu".into(),
            fallback_reason: Some(reason),
        },
    )
}

/// Fetches a file from the page's origin.
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, String> {
    let response = gloo_net::http::Request::get(url)
        .send()
        .await
        .map_err(|e| format!("could not fetch {url}: {e}"))?;
    if !response.ok() {
        return Err(format!("{url}: HTTP {} {}", response.status(), response.status_text()));
    }
    response
        .binary()
        .await
        .map_err(|e| format!("{url}: reading the body failed: {e}"))
}

/// Parses the shipped digits.
pub fn parse_digits(images: &[u8], labels: &[u8]) -> Result<ImageDataset, String> {
    let digits = parse_idx_images(images, "digits").map_err(|e| e.to_string())?;
    let labels = parse_idx_labels(labels, "digit labels").map_err(|e| e.to_string())?;
    digits.with_labels(labels).map_err(|e| e.to_string())
}

impl Engine {
    /// Loads everything: the device (as `preference` asks), `config.json`, the weights and the digits.
    pub async fn load(preference: BackendPreference) -> Result<Engine, String> {
        // The device opens while the four files download, all at once.
        let urls = [CONFIG_FILE, WEIGHTS_FILE, DIGIT_IMAGES, DIGIT_LABELS].map(|f| format!("{ASSETS}/{f}"));
        let [config_url, weights_url, images_url, labels_url] = &urls;
        let ((device, backend), files) = futures::future::join(
            select_device(preference),
            futures::future::try_join4(
                fetch_bytes(config_url),
                fetch_bytes(weights_url),
                fetch_bytes(images_url),
                fetch_bytes(labels_url),
            ),
        )
        .await;
        let (config_bytes, weights, images, labels) = files?;
        let config = DiffusionConfig::from_json(&String::from_utf8_lossy(&config_bytes))
            .map_err(|e| format!("{config_url}: {e}"))?;
        let unet = config
            .load_unet(weights, &device)
            .map_err(|e| format!("{weights_url}: {e}"))?;
        let digits = parse_digits(&images, &labels)?;
        Ok(Engine {
            device,
            backend,
            unet,
            config,
            digits,
        })
    }
}
