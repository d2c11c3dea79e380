//! The one loop that runs reverse chains in the page, for the reverse, comparison and walk panels,
//! and the read-back of what they show.
//!
//! Chains step in lockstep (each round steps the chains whose next timestep is the largest, so
//! chains with different samplers stay at the same noise level; one chain steps every round). The
//! ε̂ of the next round is asked for before this round is shown: in the Web Worker the next forward
//! pass runs while the page reads back and draws, and on the device the request is only recorded.

use super::canvas::yield_to_browser;
use super::engine::{Engine, PendingEps};
use crate::diffusion::sampler::{ChainStep, EpsModel, Guidance, ReverseChain, lockstep};
use burn::tensor::Tensor;

/// Runs `chains` to x_0, or until `stop()` says so (checked before each round), each with its own
/// guidance (`None`: the unconditional chain). After each round, `show` gets what every chain
/// stepped in it (its index and step), and the browser gets a turn to draw.
///
/// # Errors
/// Invalid guidance, a failed worker answer, or whatever `show` returns.
pub async fn drive_chains<M: EpsModel>(
    engine: &Engine,
    chains: &mut [ReverseChain<'_, M>],
    guidance: &[Option<Guidance>],
    stop: impl Fn() -> bool,
    mut show: impl AsyncFnMut(Vec<(usize, ChainStep)>) -> Result<(), String>,
) -> Result<(), String> {
    assert_eq!(chains.len(), guidance.len(), "one guidance per chain");
    let mut pending = next_round(engine, chains, guidance)?;
    while pending.iter().any(Option::is_some) && !stop() {
        let mut stepped = Vec::new();
        for (i, request) in pending.iter_mut().enumerate() {
            let Some(request) = request.take() else { continue };
            let eps = request.eps().await?; // [b, c, h, w]
            stepped.extend(chains[i].step_with(eps).map(|s| (i, s)));
        }
        pending = next_round(engine, chains, guidance)?;
        show(stepped).await?;
        yield_to_browser().await;
    }
    Ok(())
}

/// The ε̂ requests of the next round: one for each chain that steps in it.
fn next_round<'e, M: EpsModel>(
    engine: &'e Engine,
    chains: &[ReverseChain<'_, M>],
    guidance: &[Option<Guidance>],
) -> Result<Vec<Option<PendingEps<'e>>>, String> {
    let next: Vec<Option<usize>> = chains.iter().map(|c| c.next_coefs().map(|c| c.t)).collect();
    let go = lockstep(&next);
    chains
        .iter()
        .zip(go)
        .zip(guidance)
        .map(|((chain, go), guidance)| match go {
            true => engine.request_next(chain, guidance.as_ref()),
            false => Ok(None),
        })
        .collect()
}

/// Reads a batch back (asynchronously: the browser forbids blocking reads) as host floats.
pub async fn read_back(t: Tensor<4>) -> Result<Vec<f32>, String> {
    let data = t.into_data_async().await.map_err(|e| e.to_string())?;
    data.try_to_vec::<f32>().map_err(|e| format!("{e:?}"))
}

/// Reads several tensors back in one transaction: one wait for the GPU per step, however many
/// pictures the step shows.
pub async fn read_back_all<const N: usize>(tensors: [Tensor<4>; N]) -> Result<[Vec<f32>; N], String> {
    let data = tensors
        .into_iter()
        .fold(burn::tensor::Transaction::default(), |t, x| t.register(x))
        .execute_async()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|d| d.try_to_vec::<f32>().map_err(|e| format!("{e:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    data.try_into()
        .map_err(|d: Vec<Vec<f32>>| format!("the transaction returned {} tensors, not {N}", d.len()))
}
