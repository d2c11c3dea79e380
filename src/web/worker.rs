//! The CPU backend's U-Net in a Web Worker, so that the page's thread never blocks for a step
//! (several of them share a step's images: [`super::worker_pool`]).
//!
//! On the CPU backend one U-Net forward for 16 digits takes about 100 ms; on the page's thread
//! every reverse step would freeze the sliders, the scrolling and the drawing for that long. A CPU
//! worker runs this same wasm module: it is handed the glue script's URL and the compiled
//! `WebAssembly.Module` (nothing is downloaded or compiled twice). A WebGPU worker runs the page's
//! second module instead, this crate built with the `webgpu` feature ([`WebGpuModule`]), which
//! the page fetches only where the browser has WebGPU: its own module carries burn's CPU backend
//! alone. Either builds the U-Net from the bytes the page already fetched, and answers each
//! request for ε̂(x_t, t) on a port of the request's own. Only the network moves: the chains, their
//! seeded noise and the pictures stay on the page, so a chain is the same step for step wherever
//! its ε̂ is computed.

use crate::model::weights::DiffusionConfig;
use burn::tensor::{Device, Tensor, TensorData};
use js_sys::{Array, Float32Array, Int32Array, Object, Promise, Reflect, Uint8Array, Uint32Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Blob, BlobPropertyBag, MessageChannel, MessageEvent, MessagePort, Url, Worker, WorkerOptions, WorkerType,
};

/// The worker's script, in two stages. The first message (the glue's URL, the module or its URL)
/// starts the wasm module; the second (the model and the backend) hands over to
/// [`eps_worker_start`], which then answers every request. So a module that has to be downloaded
/// (the WebGPU module) arrives while the page still fetches the weights. The script imports
/// nothing statically, so its `onmessage` is in place before the page's first message can arrive.
const BOOTSTRAP: &str = r#"
const reply = (work) => async ({ data }) => {
  self.onmessage = null;
  try {
    await work(data);
    self.postMessage({ ready: true });
  } catch (e) {
    self.postMessage({ error: String(e) });
  }
};
self.onmessage = reply(async (data) => {
  const glue = await import(data.glue);
  await glue.default({ module_or_path: data.module });
  self.onmessage = reply((model) => glue.eps_worker_start(model.config, model.weights, model.backend));
});
"#;

#[wasm_bindgen]
extern "C" {
    /// The URL of the wasm-bindgen glue script this module was started by.
    #[wasm_bindgen(thread_local_v2, js_namespace = ["import", "meta"], js_name = url)]
    static GLUE_URL: String;
}

/// `object[name]`, or an error naming it.
fn field(object: &JsValue, name: &str) -> Result<JsValue, String> {
    Reflect::get(object, &JsValue::from_str(name)).map_err(|_| format!("the message has no '{name}'"))
}

/// A plain object with the given fields.
fn object(fields: &[(&str, &JsValue)]) -> JsValue {
    let object = Object::new();
    for (name, value) in fields {
        let _ = Reflect::set(&object, &JsValue::from_str(name), value);
    }
    object.into()
}

/// What an error event or a thrown value says.
fn describe(error: &JsValue) -> String {
    field(error, "message")
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}

/// Why a worker gave no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerFault {
    /// The worker is alive and answered that it cannot do this request (a shape that does not
    /// fit, a class the model lacks, weights it cannot read): asking again gives the same answer.
    Refused(String),
    /// An error was raised in the worker, its answer could not be read, or it stopped answering:
    /// it is of no further use (a pool replaces it).
    Lost(String),
}

impl std::fmt::Display for WorkerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkerFault::Refused(why) | WorkerFault::Lost(why) => write!(f, "the model's worker failed: {why}"),
        }
    }
}

/// A promise that resolves after `ms` milliseconds (`setTimeout` of the page or the worker).
fn sleep(ms: f64) -> JsFuture {
    JsFuture::from(Promise::new(&mut |resolve, _| {
        let set_timeout = Reflect::get(&js_sys::global(), &JsValue::from_str("setTimeout"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        if let Some(set_timeout) = set_timeout {
            let _ = set_timeout.call2(&JsValue::UNDEFINED, &resolve, &JsValue::from_f64(ms));
        }
    }))
}

/// A message posted to the worker whose answer is still to come.
struct Posted {
    /// Resolves with the answer's event, or rejects with the worker's error event (or the
    /// port's `messageerror`: an answer that could not be read).
    answer: JsFuture,
    /// Where the answer arrives.
    port: JsValue,
    worker: Worker,
}

/// Listens on `port` for the next message and on `worker` for an error, then posts with `post`.
fn post(port: JsValue, worker: &Worker, post: impl FnOnce() -> Result<(), JsValue>) -> Result<Posted, String> {
    let mut handlers = Ok(());
    let answer = Promise::new(&mut |resolve, reject| {
        handlers = Reflect::set(&port, &JsValue::from_str("onmessage"), &resolve)
            .and_then(|_| Reflect::set(&port, &JsValue::from_str("onmessageerror"), &reject))
            .map(drop);
        worker.set_onerror(Some(&reject));
    });
    handlers.map_err(|e| describe(&e))?;
    post().map_err(|e| format!("could not reach the model's worker: {}", describe(&e)))?;
    Ok(Posted {
        answer: JsFuture::from(answer),
        port,
        worker: worker.clone(),
    })
}

impl Posted {
    /// The answer's data: the next message on the port, or the error raised in the worker,
    /// whichever comes first; [`WorkerFault::Lost`] if neither comes within `patience_ms`.
    async fn answer(self, patience_ms: f64) -> Result<JsValue, WorkerFault> {
        let outcome = match futures::future::select(self.answer, sleep(patience_ms)).await {
            futures::future::Either::Left((event, _)) => Some(event),
            futures::future::Either::Right(_) => None,
        };
        for handler in ["onmessage", "onmessageerror"] {
            let _ = Reflect::set(&self.port, &JsValue::from_str(handler), &JsValue::NULL);
        }
        self.worker.set_onerror(None);
        let event = outcome
            .ok_or_else(|| WorkerFault::Lost(format!("no answer in {:.1} s", patience_ms / 1000.0)))?
            .map_err(|e| WorkerFault::Lost(describe(&e)))?;
        let data = field(&event, "data").map_err(WorkerFault::Lost)?;
        match field(&data, "error").map_err(WorkerFault::Lost)?.as_string() {
            Some(error) => Err(WorkerFault::Refused(error)),
            None => Ok(data),
        }
    }
}

/// How long a worker may take to start, or to answer before a pool knows how fast it is.
pub const FIRST_PATIENCE_MS: f64 = 120_000.0;

/// A request for ε̂ on its way to the worker (the worker computes while the page goes on).
pub struct EpsRequest {
    posted: Posted,
    channel: MessageChannel,
}

impl EpsRequest {
    /// Waits (without blocking the page) for ε̂, host floats image after image.
    pub async fn eps(self) -> Result<Vec<f32>, String> {
        self.eps_within(FIRST_PATIENCE_MS)
            .await
            .map_err(|fault| fault.to_string())
    }

    /// [`Self::eps`], or [`WorkerFault::Lost`] when no answer comes within `patience_ms`.
    pub async fn eps_within(self, patience_ms: f64) -> Result<Vec<f32>, WorkerFault> {
        let answer = self.posted.answer(patience_ms).await;
        self.channel.port1().close();
        let eps = field(&answer?, "eps").map_err(WorkerFault::Lost)?;
        Ok(eps
            .dyn_into::<Float32Array>()
            .map_err(|_| WorkerFault::Lost("ε̂ came back in the wrong form".into()))?
            .to_vec())
    }
}

/// The page's WebGPU module: where its glue script and its wasm are (`www/index.html` builds it,
/// `scripts/post_build.py` names its hashed files in the built page's `<meta name="ddpm-webgpu-module">`).
#[derive(Clone, Debug, PartialEq)]
pub struct WebGpuModule {
    /// The glue script's URL.
    pub glue: String,
    /// The wasm: its URL, or a compiled `WebAssembly.Module`.
    pub module: JsValue,
}

/// The `name` of the `<meta>` that names the WebGPU module's files: `content="glue.js module.wasm"`.
pub const WEBGPU_MODULE_META: &str = "ddpm-webgpu-module";

impl WebGpuModule {
    /// The module the page names, resolved against the page's URL; why not, when it names none
    /// (a page built without it, or a test page).
    pub fn of_page() -> Result<WebGpuModule, String> {
        let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
        let missing = || "this page was built without its WebGPU module".to_string();
        let content = document
            .query_selector(&format!("meta[name='{WEBGPU_MODULE_META}']"))
            .ok()
            .flatten()
            .and_then(|meta| meta.get_attribute("content"))
            .ok_or_else(missing)?;
        let base = document.base_uri().ok().flatten().ok_or("the page has no URL")?;
        let resolve = |path: &str| {
            Url::new_with_base(path, &base)
                .map(|url| url.href())
                .map_err(|e| describe(&e))
        };
        match content.split_whitespace().collect::<Vec<_>>()[..] {
            [glue, wasm] => Ok(WebGpuModule {
                glue: resolve(glue)?,
                module: JsValue::from_str(&resolve(wasm)?),
            }),
            _ => Err(missing()),
        }
    }

    /// The module this code runs in, when it was built with the `webgpu` feature (the browser
    /// tests are): a WebGPU worker without a second download.
    #[cfg(feature = "webgpu")]
    pub fn this_module() -> WebGpuModule {
        WebGpuModule {
            glue: GLUE_URL.with(String::clone),
            module: wasm_bindgen::module(),
        }
    }
}

/// What a worker runs the U-Net on.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerBackend {
    /// burn's CPU backend, in the page's own module.
    Cpu,
    /// burn's wgpu backend on the browser's WebGPU, in the page's WebGPU module.
    WebGpu(WebGpuModule),
}

/// A Web Worker whose wasm module runs but that holds no model yet ([`EpsWorker::spawn`]);
/// dropping it ends the worker.
pub struct SpawnedWorker {
    worker: EpsWorker,
    backend: WorkerBackend,
}

impl SpawnedWorker {
    /// What the worker's module runs the U-Net on.
    pub fn backend(&self) -> &WorkerBackend {
        &self.backend
    }

    /// Builds the U-Net of `config_json` (`config.json`'s text) and `weights` (the weights file's
    /// bytes) in the worker; resolves once it is built (for WebGPU, once the device is open).
    pub async fn load(self, config_json: &str, weights: &[u8]) -> Result<EpsWorker, String> {
        let backend = match self.backend {
            WorkerBackend::Cpu => "cpu",
            WorkerBackend::WebGpu(_) => "webgpu",
        };
        let model = object(&[
            ("config", &JsValue::from_str(config_json)),
            ("weights", &Uint8Array::from(weights).into()),
            ("backend", &JsValue::from_str(backend)),
        ]);
        let worker = self.worker;
        post(worker.worker.clone().into(), &worker.worker, || {
            worker.worker.post_message(&model)
        })?
        .answer(FIRST_PATIENCE_MS)
        .await
        .map_err(|fault| fault.to_string())?;
        Ok(worker)
    }
}

/// A Web Worker that runs the U-Net; dropping it ends the worker.
pub struct EpsWorker {
    worker: Worker,
}

impl EpsWorker {
    /// Starts a worker that runs the wasm module of `backend` (the WebGPU module is downloaded
    /// now); resolves once the module runs there.
    pub async fn spawn(backend: &WorkerBackend) -> Result<SpawnedWorker, String> {
        let parts = Array::of1(&JsValue::from_str(BOOTSTRAP));
        let kind = BlobPropertyBag::new();
        kind.set_type("text/javascript");
        let blob = Blob::new_with_str_sequence_and_options(&parts, &kind).map_err(|e| describe(&e))?;
        let url = Url::create_object_url_with_blob(&blob).map_err(|e| describe(&e))?;
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options(&url, &options);
        let worker = EpsWorker {
            worker: worker.map_err(|e| format!("no Web Worker: {}", describe(&e)))?,
        };
        let (glue, module) = match backend {
            WorkerBackend::Cpu => (GLUE_URL.with(String::clone), wasm_bindgen::module()),
            WorkerBackend::WebGpu(m) => (m.glue.clone(), m.module.clone()),
        };
        let start = object(&[("glue", &JsValue::from_str(&glue)), ("module", &module)]);
        let ready = match post(worker.worker.clone().into(), &worker.worker, || {
            worker.worker.post_message(&start)
        }) {
            Ok(posted) => posted
                .answer(FIRST_PATIENCE_MS)
                .await
                .map_err(|fault| fault.to_string()),
            Err(e) => Err(e),
        };
        let _ = Url::revoke_object_url(&url);
        ready.map(|_| SpawnedWorker {
            worker,
            backend: backend.clone(),
        })
    }

    /// Starts a worker with the model of `config_json` and `weights` on `backend`: [`Self::spawn`],
    /// then [`SpawnedWorker::load`].
    pub async fn start(config_json: &str, weights: &[u8], backend: &WorkerBackend) -> Result<EpsWorker, String> {
        Self::spawn(backend).await?.load(config_json, weights).await
    }

    /// Asks for ε̂(x_t, t, c) for a batch `x_t` of `shape` (host floats, image after image), each
    /// image at its own timestep `t` and with its own class (`None`: no class): posted at once,
    /// answered by [`EpsRequest::eps`].
    pub fn request_eps(
        &self,
        x_t: &[f32],
        shape: [usize; 4],
        t: &[usize],
        classes: &[Option<usize>],
    ) -> Result<EpsRequest, String> {
        let channel = MessageChannel::new().map_err(|e| describe(&e))?;
        let x = Float32Array::from(x_t);
        let shape = Uint32Array::from(&shape.map(|d| d as u32)[..]);
        let t = Uint32Array::from(&t.iter().map(|&t| t as u32).collect::<Vec<_>>()[..]);
        // −1 is "no class".
        let classes = Int32Array::from(&classes.iter().map(|c| c.map_or(-1, |c| c as i32)).collect::<Vec<_>>()[..]);
        let request = object(&[
            ("x", &x),
            ("shape", &shape),
            ("t", &t),
            ("classes", &classes),
            ("port", &channel.port2()),
        ]);
        let transfer = Array::of2(&channel.port2(), &x.buffer());
        let posted = post(channel.port1().into(), &self.worker, || {
            self.worker.post_message_with_transfer(&request, &transfer)
        })?;
        Ok(EpsRequest { posted, channel })
    }

    /// ε̂(x_t, t, c), as [`Self::request_eps`] and then its answer.
    pub async fn predict_eps(
        &self,
        x_t: &[f32],
        shape: [usize; 4],
        t: &[usize],
        classes: &[Option<usize>],
    ) -> Result<Vec<f32>, String> {
        self.request_eps(x_t, shape, t, classes)?.eps().await
    }
}

impl Drop for EpsWorker {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}

/// The worker's side, called by [`BOOTSTRAP`] once the module runs there: builds the U-Net on
/// `backend` ("cpu", or "webgpu" in the module built with the `webgpu` feature) and answers every
/// request that follows.
#[wasm_bindgen]
pub async fn eps_worker_start(config_json: String, weights: Vec<u8>, backend: String) -> Result<(), JsValue> {
    let config =
        DiffusionConfig::from_json(&config_json).map_err(|e| JsValue::from_str(&format!("config.json: {e}")))?;
    let device = worker_device(&backend).await.map_err(|e| JsValue::from_str(&e))?;
    let unet = config
        .load_unet(weights, &device)
        .map_err(|e| JsValue::from_str(&format!("the weights: {e}")))?;
    let unet = std::rc::Rc::new(unet);
    let scope: web_sys::DedicatedWorkerGlobalScope = js_sys::global().dyn_into()?;
    let answer = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        let (unet, device) = (unet.clone(), device.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let request = event.data();
            let Ok(port) = field(&request, "port").and_then(|p| p.dyn_into::<MessagePort>().map_err(|_| String::new()))
            else {
                return;
            };
            let reply = match answer_request(&unet, &device, &request).await {
                Ok(eps) => {
                    let eps = Float32Array::from(&eps[..]);
                    port.post_message_with_transferable(&object(&[("eps", &eps)]), &Array::of1(&eps.buffer()))
                }
                Err(error) => port.post_message(&object(&[("error", &JsValue::from_str(&error))])),
            };
            if let Err(e) = reply {
                web_sys::console::error_1(&e);
            }
        })
    });
    scope.set_onmessage(Some(answer.as_ref().unchecked_ref()));
    // The handler lives as long as the worker.
    answer.forget();
    Ok(())
}

/// The device a worker runs the U-Net on.
async fn worker_device(backend: &str) -> Result<Device, String> {
    match backend {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "webgpu")]
        "webgpu" => Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| format!("WebGPU failed to start ({e})")),
        other => Err(format!("this module has no '{other}' backend")),
    }
}

/// ε̂ for one request `{x, shape, t, classes}` (classes: −1 is "no class"; absent: none).
async fn answer_request(unet: &crate::model::UNet, device: &Device, request: &JsValue) -> Result<Vec<f32>, String> {
    let array = |name: &str| -> Result<Vec<usize>, String> {
        let values = field(request, name)?
            .dyn_into::<Uint32Array>()
            .map_err(|_| format!("'{name}' is not a Uint32Array"))?;
        Ok(values.to_vec().into_iter().map(|v| v as usize).collect())
    };
    let x = field(request, "x")?
        .dyn_into::<Float32Array>()
        .map_err(|_| "'x' is not a Float32Array")?
        .to_vec();
    let shape: [usize; 4] = array("shape")?
        .try_into()
        .map_err(|_| "'shape' must have four dimensions")?;
    let t = array("t")?;
    if x.len() != shape.iter().product::<usize>() || t.len() != shape[0] {
        return Err(format!(
            "{} values and {} timesteps do not fit the shape {shape:?}",
            x.len(),
            t.len()
        ));
    }
    let classes: Vec<Option<usize>> = match field(request, "classes") {
        Ok(c) if !c.is_undefined() => c
            .dyn_into::<Int32Array>()
            .map_err(|_| "'classes' is not an Int32Array")?
            .to_vec()
            .into_iter()
            .map(|c| usize::try_from(c).ok())
            .collect(),
        _ => vec![None; t.len()],
    };
    if classes.len() != t.len() {
        return Err(format!("{} classes for {} images", classes.len(), t.len()));
    }
    let limit = unet.num_classes().unwrap_or(0);
    if let Some(&bad) = classes.iter().flatten().find(|&&c| c >= limit) {
        return Err(format!("class {bad} is not one of the model's {limit} classes"));
    }
    let x_t = Tensor::<4>::from_data(TensorData::new(x, shape), device); // [b, c, h, w]
    let eps = unet.forward_classes(x_t, &t, Some(&classes)); // [b, c, h, w]
    let eps = eps.into_data_async().await.map_err(|e| e.to_string())?;
    eps.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}
