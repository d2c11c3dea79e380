//! The browser's model engine: where the U-Net runs (WebGPU in a Web Worker that runs the page's
//! WebGPU module, or burn's CPU backend in a worker per core when WebGPU is missing), the trained
//! U-Net and its configuration, all fetched from the page's own origin.

use super::models::{Catalogue, LoadError, ModelEntry, fetch_bytes, fetch_bytes_reporting, fetch_catalogue};
use super::worker::{EpsWorker, SpawnedWorker, WebGpuModule, WorkerBackend};
use super::worker_pool::{EpsPool, PoolRequest, pool_size};
use crate::data::{EXAMPLE_IMAGES_FILE, EXAMPLE_LABELS_FILE, ImageDataset, parse_idx_images, parse_idx_labels};
use crate::diffusion::sampler::guidance::check_guidance;
use crate::diffusion::sampler::{EpsModel, Guidance, ReverseChain};
use crate::image::ImageShape;
use crate::model::UNet;
use crate::model::weights::{CONFIG_FILE, DiffusionConfig, WEIGHTS_FILE};
use crate::view_state::BackendPreference;
use burn::tensor::{Device, Tensor, TensorData};
use js_sys::Reflect;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// The page's CPU kernels, for the badge: which of the page's two builds runs (its loader starts
/// the one with relaxed SIMD's multiply-add where the browser has it: scripts/post_build.py).
pub const CPU_SIMD: &str = if cfg!(feature = "relaxed-simd") {
    "relaxed SIMD"
} else {
    "SIMD"
};

/// Which backend runs the model, in words for the badge.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendInfo {
    /// True when a WebGPU adapter runs the model (in a Web Worker).
    pub webgpu: bool,
    /// Adapter description, e.g. "nvidia ampere" or "google swiftshader (CPU emulation)".
    pub adapter: String,
    /// Why the CPU is used, when it is.
    pub fallback_reason: Option<String>,
    /// `Ok(n)` when the U-Net runs in n Web Workers (one on WebGPU), else why it runs on the page's
    /// thread (on the CPU).
    pub worker: Result<usize, String>,
}

impl BackendInfo {
    /// The badge's text.
    pub fn label(&self) -> String {
        match (&self.fallback_reason, self.webgpu) {
            (None, true) => format!("WebGPU · {}, in a Web Worker", self.adapter),
            (Some(reason), _) => format!("CPU (burn flex, {CPU_SIMD}{}) · {reason}", self.cpu_place()),
            (None, false) => format!("CPU (burn flex, {CPU_SIMD}{})", self.cpu_place()),
        }
    }

    /// Where the CPU backend runs, for the badge.
    fn cpu_place(&self) -> String {
        match &self.worker {
            Ok(1) => ", in a Web Worker".into(),
            Ok(n) => format!(", in {n} Web Workers"),
            Err(why) => format!(", on the page's thread: {why}"),
        }
    }
}

/// Everything the panels need to run the model.
pub struct Engine {
    /// Where the page's tensors live: burn's CPU backend (the chains, their noise and pictures).
    pub device: Device,
    /// What that device is.
    pub backend: BackendInfo,
    /// The trained network.
    pub unet: UNet,
    /// Its architecture and schedule.
    pub config: DiffusionConfig,
    /// Real images of the model's dataset, for the forward panel.
    pub digits: ImageDataset,
    /// The models the page offers.
    pub catalogue: Catalogue,
    /// Which of them this is.
    pub model: ModelEntry,
    /// Why this is not the model the link asked for, when it is not.
    pub notice: Option<String>,
    /// The copies of the U-Net that run in Web Workers: one on WebGPU, or [`pool_size`] on the CPU
    /// (`None`: no worker could start, and `unet` runs every step on the page's
    /// thread).
    pub worker: Option<EpsPool>,
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

/// Decides where the U-Net runs: on WebGPU when the browser grants a hardware adapter (any adapter
/// with `?backend=webgpu`), in a Web Worker that runs the page's WebGPU module; else on burn's CPU
/// backend, with the reason for the badge. Never fails.
pub async fn choose_backend(preference: BackendPreference) -> BackendInfo {
    if preference == BackendPreference::Cpu {
        return cpu_backend("chosen with ?backend=cpu".into());
    }
    match describe_adapter().await {
        Ok(adapter) if adapter.software && preference == BackendPreference::Auto => cpu_backend(format!(
            "the only WebGPU adapter is {}, slower than the CPU backend (?backend=webgpu uses it anyway)",
            adapter.name
        )),
        Ok(adapter) => BackendInfo {
            webgpu: true,
            adapter: adapter.name,
            fallback_reason: None,
            worker: Err("no Web Worker started yet".into()),
        },
        Err(reason) => cpu_backend(reason),
    }
}

/// burn's CPU backend, with the reason it is used.
pub fn cpu_backend(reason: String) -> BackendInfo {
    BackendInfo {
        webgpu: false,
        adapter: "cpu".into(),
        fallback_reason: Some(reason),
        worker: Err("no Web Worker started yet".into()),
    }
}

/// Where the U-Net is to run, and for WebGPU its worker, started as soon as that is known (its
/// module downloads while the page fetches the weights).
async fn choose_and_spawn(preference: BackendPreference) -> (BackendInfo, Option<Result<SpawnedWorker, String>>) {
    let backend = choose_backend(preference).await;
    if !backend.webgpu {
        return (backend, None);
    }
    let spawned = match WebGpuModule::of_page() {
        Ok(module) => EpsWorker::spawn(&WorkerBackend::WebGpu(module)).await,
        Err(why) => Err(why),
    };
    (backend, Some(spawned))
}

/// Gives the WebGPU worker `spawned` its model, or starts CPU workers ([`pool_size`]) when WebGPU
/// was not chosen or its worker fails (the badge then says why); `None` when no
/// worker starts at all (the U-Net then runs on the page's thread).
async fn start_workers(
    config_json: &str,
    weights: &[u8],
    mut backend: BackendInfo,
    spawned: Option<Result<SpawnedWorker, String>>,
) -> (Option<EpsPool>, BackendInfo) {
    if let Some(spawned) = spawned {
        let started = match spawned {
            Ok(spawned) => {
                let on = spawned.backend().clone();
                let loaded = spawned.load(config_json, weights).await;
                loaded.map(|worker| EpsPool::of_workers(vec![worker], config_json, weights, on))
            }
            Err(why) => Err(why),
        };
        match started {
            Ok(pool) => {
                backend.worker = Ok(pool.len());
                return (Some(pool), backend);
            }
            Err(why) => backend = cpu_backend(format!("WebGPU ({}) did not start: {why}", backend.adapter)),
        }
    }
    let cores = web_sys::window().map_or(1.0, |w| w.navigator().hardware_concurrency());
    let started = EpsPool::start(config_json, weights, pool_size(cores as usize), WorkerBackend::Cpu).await;
    backend.worker = started.as_ref().map(EpsPool::len).map_err(String::clone);
    (started.ok(), backend)
}

/// Parses the shipped digits.
pub fn parse_digits(images: &[u8], labels: &[u8]) -> Result<ImageDataset, String> {
    let digits = parse_idx_images(images, "digits").map_err(|e| e.to_string())?;
    let labels = parse_idx_labels(labels, "digit labels").map_err(|e| e.to_string())?;
    digits.with_labels(labels).map_err(|e| e.to_string())
}

impl Engine {
    /// The shape of the model's images.
    pub fn image(&self) -> ImageShape {
        ImageShape {
            channels: self.config.unet.image_channels,
            size: self.config.unet.image_size,
        }
    }

    /// Loads everything: the device (as `preference` asks), the page's list of models, and the
    /// model `model` names (the first when `None` or when no model has that name): its
    /// `config.json`, weights and real images. `on_progress` hears which model loads and how many
    /// bytes of its weights have arrived.
    pub async fn load(
        preference: BackendPreference,
        model: Option<String>,
        mut on_progress: impl FnMut(&ModelEntry, usize),
    ) -> Result<Engine, LoadError> {
        let catalogue = fetch_catalogue().await?;
        let (entry, notice) = match catalogue.pick(model.as_deref()) {
            Some(entry) => (entry.clone(), None),
            None => {
                let first = catalogue.models[0].clone();
                let ids = catalogue
                    .models
                    .iter()
                    .map(|m| m.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ");
                let asked = model.unwrap_or_default();
                let notice = format!(
                    "model={asked} is not one of this page's models ({ids}): showing {}",
                    first.name
                );
                (first, Some(notice))
            }
        };
        on_progress(&entry, 0);
        // The adapter is asked for (and a WebGPU worker started) while the four files download.
        let urls = [CONFIG_FILE, WEIGHTS_FILE, EXAMPLE_IMAGES_FILE, EXAMPLE_LABELS_FILE].map(|f| entry.url(f));
        let [config_url, weights_url, images_url, labels_url] = &urls;
        let device = Device::flex();
        let ((backend, spawned), files) = futures::future::join(
            choose_and_spawn(preference),
            futures::future::try_join4(
                fetch_bytes(config_url),
                fetch_bytes_reporting(weights_url, |n| on_progress(&entry, n)),
                fetch_bytes(images_url),
                fetch_bytes(labels_url),
            ),
        )
        .await;
        let (config_bytes, weights, images, labels) = files?;
        let config_json = String::from_utf8_lossy(&config_bytes);
        let config =
            DiffusionConfig::from_json(&config_json).map_err(|e| LoadError::lasting(format!("{config_url}: {e}")))?;
        let unet = config
            .load_unet(weights.clone(), &device)
            .map_err(|e| LoadError::lasting(format!("{weights_url}: {e}")))?;
        let digits = parse_digits(&images, &labels).map_err(LoadError::lasting)?;
        let image = ImageShape {
            channels: config.unet.image_channels,
            size: config.unet.image_size,
        };
        if [digits.channels, digits.rows, digits.cols] != [image.channels, image.size, image.size] {
            return Err(LoadError::lasting(format!(
                "{images_url}: the examples are {}×{}×{} (channels × rows × cols) but the model draws {}×{}×{}",
                digits.channels, digits.rows, digits.cols, image.channels, image.size, image.size
            )));
        }
        let (worker, backend) = start_workers(&config_json, &weights, backend, spawned).await;
        Ok(Engine {
            device,
            backend,
            unet,
            config,
            digits,
            catalogue,
            model: entry,
            notice,
            worker,
        })
    }

    /// Asks for ε̂(x_t, t) from the U-Net, wherever it runs, guided as `guidance` says (`None`:
    /// unconditional; both passes of a guided step go as one batch). In the Web Worker the request
    /// leaves at once and the worker computes while the page goes on (it draws the step before);
    /// on the device the network runs when [`PendingEps::eps`] is awaited, in the order it always
    /// had.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, channels, height, width]`, `t`: `batch` timesteps
    pub fn request_eps(
        &self,
        x_t: Tensor<4>,
        t: &[usize],
        guidance: Option<&Guidance>,
    ) -> Result<PendingEps<'_>, String> {
        let guidance = match guidance {
            Some(g) => {
                check_guidance(g, self.unet.num_classes()).map_err(|e| e.to_string())?;
                g.clone()
            }
            None => Guidance {
                classes: vec![None; t.len()],
                scale: 0.0,
            },
        };
        let (x, t, classes) = guidance.inputs(x_t, t); // [b or 2b, c, h, w]
        let Some(worker) = &self.worker else {
            return Ok(PendingEps::OnDevice {
                unet: &self.unet,
                x_t: Box::new(x),
                t,
                classes,
                guidance,
            });
        };
        let shape = x.dims();
        // The CPU backend's tensors are ready at once: the read-back never waits.
        let x = burn::tensor::try_read_sync(x.into_data_async())
            .ok_or("x_t was not ready to read")?
            .map_err(|e| e.to_string())?
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?; // [b · c · h · w]
        Ok(PendingEps::InWorker {
            request: worker.request_eps(&x, shape, &t, &classes)?,
            shape,
            device: self.device.clone(),
            guidance,
        })
    }

    /// Asks for the ε̂ of `chain`'s next step (`None` once x_0 is reached).
    pub fn request_next<M: EpsModel>(
        &self,
        chain: &ReverseChain<'_, M>,
        guidance: Option<&Guidance>,
    ) -> Result<Option<PendingEps<'_>>, String> {
        chain
            .model_input()
            .map(|(x_t, t)| self.request_eps(x_t, &t, guidance))
            .transpose()
    }
}

/// ε̂ on its way: from the worker, or from the U-Net on the device once awaited.
pub enum PendingEps<'e> {
    /// The network runs on the engine's device when awaited.
    OnDevice {
        /// The network.
        unet: &'e UNet,
        /// Its input, `[batch or 2·batch, channels, height, width]` (boxed: a tensor handle is
        /// large beside the other variant).
        x_t: Box<Tensor<4>>,
        /// Each image's timestep.
        t: Vec<usize>,
        /// Each image's class (`None`: no class).
        classes: Vec<Option<usize>>,
        /// How the answer becomes ε̃.
        guidance: Guidance,
    },
    /// Posted to the Web Worker.
    InWorker {
        /// The request.
        request: PoolRequest<'e>,
        /// The batch's shape.
        shape: [usize; 4],
        /// Where the answer goes.
        device: Device,
        /// How the answer becomes ε̃.
        guidance: Guidance,
    },
}

impl PendingEps<'_> {
    /// ε̂, `[batch, channels, height, width]`.
    pub async fn eps(self) -> Result<Tensor<4>, String> {
        match self {
            PendingEps::OnDevice {
                unet,
                x_t,
                t,
                classes,
                guidance,
            } => Ok(guidance.combine(unet.forward_classes(*x_t, &t, Some(&classes)))),
            PendingEps::InWorker {
                request,
                shape,
                device,
                guidance,
            } => {
                let eps = request.eps().await?; // [b · c · h · w]
                Ok(guidance.combine(Tensor::from_data(TensorData::new(eps, shape), &device)))
            }
        }
    }
}
