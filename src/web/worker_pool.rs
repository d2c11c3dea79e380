//! A pool of [`EpsWorker`]s that shares every request for ε̂ out by images, so every core but the
//! page's works on a step.

use super::worker::{EpsRequest, EpsWorker, FIRST_PATIENCE_MS, WorkerBackend, WorkerFault};
use crate::image::split_batch;
use std::cell::{Cell, RefCell};
use wasm_bindgen::JsValue;

/// The most workers a pool starts: a batch of 16 (32 when guided) splits into parts of 2–4 images,
/// below which a worker's fixed cost per request outweighs its share.
pub const MAX_WORKERS: usize = 8;

/// How many workers to start on a machine with `cores` logical processors
/// (`navigator.hardwareConcurrency`): one per core but the page's own, at most [`MAX_WORKERS`];
/// but two on two cores and one on one.
///
/// The page's thread needs only 15–30 ms of a step (reading back, drawing), so on two cores a
/// second worker beside it pays: on a 2-core VM a step of 16 digits took 128–177 ms with two
/// workers against 237–259 ms with one, with no long task on the page's thread either way
/// (docs/performance.md).
pub fn pool_size(cores: usize) -> usize {
    match cores {
        0..=2 => cores.max(1),
        _ => (cores - 1).min(MAX_WORKERS),
    }
}

/// Above the slowest answer seen so far (per image, times the images asked for), how long a
/// worker may take before it is taken for lost: a live worker is never that late.
const PATIENCE_FACTOR: f64 = 10.0;
/// Added to that, so that a quick model on a busy machine is not taken for lost.
const PATIENCE_FLOOR_MS: f64 = 5_000.0;

/// Web Workers that each hold a copy of the U-Net and share every request by images: the images
/// of a batch are independent, so each worker gets a run of them and the answers are joined in
/// order. An image's ε̂ is computed alone in its batch dimension whatever the batch, so a chain
/// is the same, bit for bit, with any number of workers.
///
/// A worker that is lost (an error raised in it, or no answer long after the slowest answer
/// so far: a worker the browser ended) is replaced by a new one, which is asked for the same
/// images once; so the chain goes on, the same to the bit. Only a second loss fails the
/// request, with both reasons: a chain never hangs on a worker.
pub struct EpsPool {
    workers: RefCell<Vec<EpsWorker>>,
    /// The model's `config.json`, weights and backend, for the workers that replace lost ones.
    config_json: String,
    weights: Vec<u8>,
    backend: WorkerBackend,
    /// The slowest answer so far, in milliseconds per image (0: none yet).
    slowest_ms_per_image: Cell<f64>,
    /// How many workers have been replaced.
    replaced: Cell<usize>,
}

impl EpsPool {
    /// Starts `size` workers (at least one) with the model on `backend`, all at once; fails if
    /// any fails.
    pub async fn start(
        config_json: &str,
        weights: &[u8],
        size: usize,
        backend: WorkerBackend,
    ) -> Result<EpsPool, String> {
        let starts = (0..size.max(1)).map(|_| EpsWorker::start(config_json, weights, &backend));
        let workers = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(Self::of_workers(workers, config_json, weights, backend))
    }

    /// A pool of `workers` already started with the model of `config_json` and `weights` on
    /// `backend` (which its replacements use too).
    pub fn of_workers(workers: Vec<EpsWorker>, config_json: &str, weights: &[u8], backend: WorkerBackend) -> EpsPool {
        assert!(!workers.is_empty(), "a pool has at least one worker");
        EpsPool {
            workers: RefCell::new(workers),
            config_json: config_json.to_owned(),
            weights: weights.to_vec(),
            backend,
            slowest_ms_per_image: Cell::new(0.0),
            replaced: Cell::new(0),
        }
    }

    /// What the workers run the U-Net on.
    pub fn backend(&self) -> &WorkerBackend {
        &self.backend
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.workers.borrow().len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.borrow().is_empty()
    }

    /// How many lost workers have been replaced so far.
    pub fn replaced(&self) -> usize {
        self.replaced.get()
    }

    /// Asks for ε̂(x_t, t, c) as [`EpsWorker::request_eps`], each worker a run of the images.
    pub fn request_eps(
        &self,
        x_t: &[f32],
        shape: [usize; 4],
        t: &[usize],
        classes: &[Option<usize>],
    ) -> Result<PoolRequest<'_>, String> {
        let per_image: usize = shape[1..].iter().product();
        if x_t.len() != shape[0] * per_image || t.len() != shape[0] || classes.len() != shape[0] {
            return Err(format!(
                "{} values, {} timesteps and {} classes do not fit the shape {shape:?}",
                x_t.len(),
                t.len(),
                classes.len()
            ));
        }
        let workers = self.workers.borrow();
        let parts = split_batch(shape[0], workers.len())
            .into_iter()
            .zip(workers.iter())
            .enumerate()
            .map(|(worker, (run, eps_worker))| {
                let [_, c, h, w] = shape;
                let part = Part {
                    worker,
                    x_t: x_t[run.start * per_image..run.end * per_image].to_vec(),
                    shape: [run.len(), c, h, w],
                    t: t[run.clone()].to_vec(),
                    classes: classes[run].to_vec(),
                };
                let request = part.ask(eps_worker)?;
                Ok((part, request))
            })
            .collect::<Result<_, String>>()?;
        Ok(PoolRequest {
            pool: self,
            parts,
            posted_at: js_sys::Date::now(),
        })
    }

    /// How long a part of `images` images may take before its worker is taken for lost.
    fn patience_ms(&self, images: usize) -> f64 {
        let slowest = self.slowest_ms_per_image.get();
        if slowest > 0.0 {
            PATIENCE_FLOOR_MS + PATIENCE_FACTOR * slowest * images as f64
        } else {
            FIRST_PATIENCE_MS
        }
    }

    /// A part's ε̂: its worker's answer, or, when that worker is lost, a new worker's.
    async fn answer(&self, part: Part, request: EpsRequest, posted_at: f64) -> Result<Vec<f32>, String> {
        let images = part.shape[0];
        let lost = match request.eps_within(self.patience_ms(images)).await {
            Ok(eps) => {
                let ms_per_image = (js_sys::Date::now() - posted_at) / images as f64;
                self.slowest_ms_per_image
                    .set(self.slowest_ms_per_image.get().max(ms_per_image));
                return Ok(eps);
            }
            Err(WorkerFault::Refused(why)) => return Err(WorkerFault::Refused(why).to_string()),
            Err(WorkerFault::Lost(why)) => why,
        };
        web_sys::console::warn_1(&JsValue::from_str(&format!(
            "worker {} of the model was lost ({lost}); starting another",
            part.worker
        )));
        let fresh = EpsWorker::start(&self.config_json, &self.weights, &self.backend)
            .await
            .map_err(|e| format!("a worker of the model was lost ({lost}) and none could replace it: {e}"))?;
        let retry = part.ask(&fresh);
        // Dropping the lost worker ends it.
        self.workers.borrow_mut()[part.worker] = fresh;
        self.replaced.set(self.replaced.get() + 1);
        match retry?.eps_within(2.0 * self.patience_ms(images)).await {
            Ok(eps) => Ok(eps),
            Err(WorkerFault::Refused(why)) => Err(WorkerFault::Refused(why).to_string()),
            Err(WorkerFault::Lost(again)) => Err(format!(
                "a worker of the model was lost ({lost}), and so was the one that replaced it ({again})"
            )),
        }
    }
}

/// One worker's run of a request's images, kept until its answer is in (a lost worker's part is
/// asked again of the worker that replaces it).
struct Part {
    /// Which worker of the pool.
    worker: usize,
    /// `[images, channels, height, width]`, host floats image after image.
    x_t: Vec<f32>,
    shape: [usize; 4],
    t: Vec<usize>,
    classes: Vec<Option<usize>>,
}

impl Part {
    /// Posts this part to `worker`.
    fn ask(&self, worker: &EpsWorker) -> Result<EpsRequest, String> {
        worker.request_eps(&self.x_t, self.shape, &self.t, &self.classes)
    }
}

/// A request shared out to a pool's workers.
pub struct PoolRequest<'p> {
    pool: &'p EpsPool,
    parts: Vec<(Part, EpsRequest)>,
    /// When it was posted ([`js_sys::Date::now`]).
    posted_at: f64,
}

impl PoolRequest<'_> {
    /// Waits for every worker's part and joins them in image order; a part that fails fails the
    /// request (the others' answers are dropped, never a partial ε̂).
    pub async fn eps(self) -> Result<Vec<f32>, String> {
        let (pool, posted_at) = (self.pool, self.posted_at);
        let answers = futures::future::join_all(
            self.parts
                .into_iter()
                .map(|(part, request)| pool.answer(part, request, posted_at)),
        )
        .await;
        let mut eps = Vec::new();
        for answer in answers {
            eps.extend(answer?);
        }
        Ok(eps)
    }
}
