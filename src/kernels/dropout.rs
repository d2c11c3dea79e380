//! Dropout with a mask drawn on the host.
//!
//! burn's `Dropout` draws its Bernoulli mask on the device, element by element; on burn's CPU
//! backend every element costs a ChaCha draw, about a tenth of a training step here. [`dropout`]
//! takes one seed and expands it with the host's SplitMix64 generator, two 32-bit comparisons per
//! 64-bit draw. The seed comes from the training step ([`with_batch_shard`]) or, outside one, from
//! the device's generator (so `Device::seed` still fixes the mask). The module stays burn's
//! `Dropout` (its probability and training flag, and the weights format), only its forward is this.

use crate::rng::NoiseRng;
use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor, TensorData};
use std::cell::Cell;

/// The mask: `len` values, each 1/keep with probability `keep` (exactly: below keep·2³² in 32
/// random bits) and 0 otherwise.
pub fn dropout_mask(seed: u64, len: usize, keep: f64) -> Vec<f32> {
    dropout_mask_from(seed, 0, len, keep)
}

/// Elements `start .. start + len` of the mask [`dropout_mask`] draws from `seed` for a longer
/// tensor, drawn without the elements before them (the generator jumps to element `start`).
pub fn dropout_mask_from(seed: u64, start: usize, len: usize, keep: f64) -> Vec<f32> {
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let kept = |half: u64| if half < threshold { scale } else { 0.0 };
    let mut rng = NoiseRng::new(seed);
    rng.skip((start / 2) as u64);
    let mut mask = vec![0.0f32; len];
    // An odd `start` is the high half of its draw.
    let odd = (start % 2).min(len);
    if odd == 1 {
        mask[0] = kept(rng.next_u64() >> 32);
    }
    for pair in mask[odd..].chunks_mut(2) {
        let bits = rng.next_u64();
        for (m, half) in pair.iter_mut().zip([bits & 0xFFFF_FFFF, bits >> 32]) {
            *m = kept(half);
        }
    }
    mask
}

/// Where the forward pass on this thread sits in a training step's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchShard {
    /// The step's dropout seed: the k-th dropout layer of the forward draws from its stream k.
    pub seed: u64,
    /// The index in the whole batch of the first image this forward pass computes.
    pub first_image: usize,
}

thread_local! {
    /// The shard of the forward pass running on this thread, and the dropout layers it has passed.
    static SHARD: Cell<Option<(BatchShard, u64)>> = const { Cell::new(None) };
}

/// Runs `forward` (one forward pass of a training step) with its dropout masks taken from `shard`:
/// each layer's mask is the slice, from image `shard.first_image` on, of the mask the whole batch
/// would have. A batch cut into shards across devices, each shard's forward on its own thread,
/// then drops exactly what one device with the whole batch drops. (burn keeps one random generator
/// per backend, not per device, so the device's generator cannot serve threads running at once.)
pub fn with_batch_shard<R>(shard: BatchShard, forward: impl FnOnce() -> R) -> R {
    struct Restore(Option<(BatchShard, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SHARD.set(self.0);
        }
    }
    let _restore = Restore(SHARD.replace(Some((shard, 0))));
    forward()
}

/// The seed and first element of the next dropout layer's mask inside [`with_batch_shard`].
fn next_shard_mask(per_image: usize) -> Option<(u64, usize)> {
    let (shard, layer) = SHARD.get()?;
    SHARD.set(Some((shard, layer + 1)));
    Some((NoiseRng::stream_seed(shard.seed, layer), shard.first_image * per_image))
}

/// `x` with each element zeroed with `dropout`'s probability and the rest scaled by 1/(1 − p),
/// while training (a device that records gradients and the layer's training flag on); `x` itself
/// otherwise, as burn's `Dropout::forward`.
///
/// # Shapes
/// - `x` and the output: `[batch, channels, height, width]`
pub fn dropout(layer: &Dropout, x: Tensor<4>) -> Tensor<4> {
    if !layer.training.is_enabled() || !x.device().is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    let device = x.device();
    let [_, channels, height, width] = x.dims();
    let (seed, start) = next_shard_mask(channels * height * width).unwrap_or_else(|| {
        // Two uniform floats from the device's generator make the seed (48 random bits).
        let draws = Tensor::<1>::random([2], Distribution::Default, &device).into_data();
        let seed = draws
            .as_slice::<f32>()
            .expect("f32 draws")
            .iter()
            .fold(0u64, |seed, &u| (seed << 24) | (u * 16_777_216.0) as u64);
        (seed, 0)
    });
    let mask = dropout_mask_from(seed, start, x.shape().num_elements(), 1.0 - layer.prob);
    let mask = Tensor::<4>::from_data(TensorData::new(mask, x.dims()), &device); // [b, c, h, w]
    x * mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use burn::tensor::Device;

    #[test]
    fn the_mask_keeps_the_right_share_scaled_by_one_over_keep() {
        let n = 200_000;
        let mask = dropout_mask(7, n, 0.9);
        assert_eq!(mask.len(), n);
        assert!(mask.iter().all(|&m| m == 0.0 || (m - 1.0 / 0.9).abs() < 1e-6));
        // Kept share within 4 standard deviations (√(0.9·0.1/n) ≈ 6.7e-4) of 0.9, so E[mask] = 1.
        let kept = mask.iter().filter(|&&m| m > 0.0).count() as f64 / n as f64;
        assert!((kept - 0.9).abs() < 4.0 * (0.09f64 / n as f64).sqrt(), "kept {kept}");
        assert_eq!(dropout_mask(7, 5, 0.9), dropout_mask(7, 5, 0.9));
        assert_ne!(dropout_mask(7, 64, 0.9), dropout_mask(8, 64, 0.9));
    }

    /// A slice drawn on its own is the same slice of the whole mask, at even and odd starts.
    #[test]
    fn a_mask_drawn_from_an_element_on_is_that_slice_of_the_whole() {
        let whole = dropout_mask(11, 101, 0.7);
        for (start, len) in [(0, 101), (1, 10), (2, 50), (37, 64), (100, 1), (50, 0)] {
            assert_eq!(
                dropout_mask_from(11, start, len, 0.7),
                whole[start..start + len],
                "{start}+{len}"
            );
        }
    }

    /// Two shards of a batch (images 0–1 and 2–4) drop what the whole batch drops, layer by layer.
    #[test]
    fn shards_of_a_batch_drop_what_the_whole_batch_drops() {
        let layer = DropoutConfig::new(0.5).init();
        let device = Device::flex().autodiff();
        let two_layers = |images: usize, first_image: usize| {
            let shard = BatchShard { seed: 9, first_image };
            with_batch_shard(shard, || {
                let x = Tensor::<4>::ones([images, 3, 4, 5], &device);
                let once = dropout(&layer, x.clone()).into_data().try_to_vec::<f32>().unwrap();
                let twice = dropout(&layer, x).into_data().try_to_vec::<f32>().unwrap();
                (once, twice)
            })
        };
        let (whole_1, whole_2) = two_layers(5, 0);
        let ((a_1, a_2), (b_1, b_2)) = (two_layers(2, 0), two_layers(3, 2));
        assert_eq!([a_1, b_1].concat(), whole_1);
        assert_eq!([a_2, b_2].concat(), whole_2);
        assert_ne!(whole_1, whole_2, "each layer draws its own mask");
        // Outside a shard the layer counter is gone: the device's generator decides again.
        assert!(SHARD.get().is_none());
    }

    #[test]
    fn dropout_follows_the_device_seed_and_is_off_without_gradients() {
        let layer = DropoutConfig::new(0.5).init();
        let plain = Device::flex();
        let x = |device: &Device| Tensor::<4>::ones([2, 3, 4, 5], device);
        // Without autodiff: the identity.
        assert_eq!(dropout(&layer, x(&plain)).into_data(), x(&plain).into_data());
        // With autodiff: zeros and twos (1/(1 − 0.5)), the same for the same device seed.
        let training = plain.autodiff();
        let run = |seed: u64| {
            training.seed(seed);
            dropout(&layer, x(&training)).into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
        assert!(a.contains(&0.0) && a.contains(&2.0));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
