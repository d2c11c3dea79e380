//! Dropout with a mask drawn on the host.
//!
//! burn's `Dropout` draws its Bernoulli mask on the device, element by element; on burn's CPU
//! backend every element costs a ChaCha draw, about a tenth of a training step here. [`dropout`]
//! takes one seed from the device's generator (so `Device::seed` still fixes the mask and a resumed
//! run repeats an uninterrupted one) and expands it with the host's SplitMix64 generator, two
//! 32-bit comparisons per 64-bit draw. The module stays burn's `Dropout` (its probability and
//! training flag, and the weights format), only its forward is this.

use crate::rng::NoiseRng;
use burn::nn::Dropout;
use burn::tensor::{Distribution, Tensor, TensorData};

/// The mask: `len` values, each 1/keep with probability `keep` (exactly: below keep·2³² in 32
/// random bits) and 0 otherwise.
pub fn dropout_mask(seed: u64, len: usize, keep: f64) -> Vec<f32> {
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut rng = NoiseRng::new(seed);
    let mut mask = vec![0.0f32; len];
    for pair in mask.chunks_mut(2) {
        let bits = rng.next_u64();
        for (m, half) in pair.iter_mut().zip([bits & 0xFFFF_FFFF, bits >> 32]) {
            *m = if half < threshold { scale } else { 0.0 };
        }
    }
    mask
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
    // Two uniform floats from the device's generator make the seed (48 random bits).
    let draws = Tensor::<1>::random([2], Distribution::Default, &device).into_data();
    let seed = draws
        .as_slice::<f32>()
        .expect("f32 draws")
        .iter()
        .fold(0u64, |seed, &u| (seed << 24) | (u * 16_777_216.0) as u64);
    let mask = dropout_mask(seed, x.shape().num_elements(), 1.0 - layer.prob);
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
