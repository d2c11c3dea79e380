//! Runs the program on rayon's worker threads, so that each parallel operation starts where it is
//! called instead of being handed over to the pool.
//!
//! burn's CPU backend, gemm and this crate's kernels split their work with rayon. Called from a
//! thread outside rayon's pool (the main thread), every such operation is queued to the pool and
//! the caller sleeps until a worker has finished it: two thread wake-ups for each of the hundreds
//! of operations in a U-Net forward, and at one thread nothing gained for them. Called from a
//! worker, an operation runs on the calling thread and only its split-off halves wait for another.

/// Runs `work` on a worker of a new rayon pool (as many threads as `RAYON_NUM_THREADS` says, or
/// one per core) and returns its result; every parallel operation inside runs on that pool. Where
/// the pool cannot be built (no threads on the platform), runs `work` where it is.
pub fn on_worker_threads<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("ddpm-worker-{i}"))
        .build()
    {
        Ok(pool) => pool.install(work),
        Err(_) => work(),
    }
}

#[cfg(test)]
mod tests {
    use super::on_worker_threads;

    #[test]
    fn work_runs_on_a_pool_worker_and_its_result_comes_back() {
        assert_eq!(
            rayon::current_thread_index(),
            None,
            "the test thread is outside any pool"
        );
        let (index, threads) = on_worker_threads(|| (rayon::current_thread_index(), rayon::current_num_threads()));
        assert!(index.is_some(), "the work ran outside the pool");
        assert!(threads >= 1);
    }
}
