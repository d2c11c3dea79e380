//! A pool of [`EpsWorker`]s that shares every request for ε̂ out by images, so every core but the
//! page's works on a step.

use super::worker::{EpsRequest, EpsWorker};

/// The most workers a pool starts: a batch of 16 (32 when guided) splits into parts of 2–4 images,
/// below which a worker's fixed cost per request outweighs its share.
pub const MAX_WORKERS: usize = 8;

/// How many workers to start on a machine with `cores` logical processors
/// (`navigator.hardwareConcurrency`): one per core but the page's own, at least one, at most
/// [`MAX_WORKERS`].
pub fn pool_size(cores: usize) -> usize {
    cores.saturating_sub(1).clamp(1, MAX_WORKERS)
}

/// `batch` images cut into at most `parts` contiguous runs as even as can be, the larger runs
/// first (no run is empty: fewer images than parts gives a run per image).
pub fn split_batch(batch: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, batch.max(1));
    let (size, larger) = (batch / parts, batch % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let end = start + size + usize::from(i < larger);
            let run = start..end;
            start = end;
            run
        })
        .filter(|run| !run.is_empty())
        .collect()
}

/// Web Workers that each hold a copy of the U-Net and share every request by images: the images
/// of a batch are independent, so each worker gets a run of them and the answers are joined in
/// order. An image's ε̂ is computed alone in its batch dimension whatever the batch, so a chain
/// is the same, bit for bit, with any number of workers.
pub struct EpsPool {
    workers: Vec<EpsWorker>,
}

impl EpsPool {
    /// Starts `size` workers (at least one) with the model, all at once; fails if any fails.
    pub async fn start(config_json: &str, weights: &[u8], size: usize) -> Result<EpsPool, String> {
        let starts = (0..size.max(1)).map(|_| EpsWorker::start(config_json, weights));
        let workers = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        Ok(EpsPool { workers })
    }

    /// The number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Always false: a pool has at least one worker.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
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
        let parts = split_batch(shape[0], self.workers.len())
            .into_iter()
            .zip(&self.workers)
            .map(|(run, worker)| {
                let [_, c, h, w] = shape;
                let x = &x_t[run.start * per_image..run.end * per_image];
                worker.request_eps(x, [run.len(), c, h, w], &t[run.clone()], &classes[run])
            })
            .collect::<Result<_, _>>()?;
        Ok(PoolRequest { parts })
    }
}

/// A request shared out to a pool's workers.
pub struct PoolRequest<'w> {
    parts: Vec<EpsRequest<'w>>,
}

impl PoolRequest<'_> {
    /// Waits for every worker's part and joins them in image order; a worker's failure is the
    /// request's (the others' answers are dropped, never a partial ε̂).
    pub async fn eps(self) -> Result<Vec<f32>, String> {
        let answers = futures::future::join_all(self.parts.into_iter().map(EpsRequest::eps)).await;
        let mut eps = Vec::new();
        for answer in answers {
            eps.extend(answer?);
        }
        Ok(eps)
    }
}
