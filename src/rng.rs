//! A small, seedable, platform-independent random number generator.
//!
//! Every random draw the diffusion process needs on the host (the forward-process ε, the reverse
//! chain's x_T and z, minibatch shuffling) comes from here, so one seed gives bit-identical
//! numbers in the browser and on the desktop: a chain shared by URL replays exactly.
//! The generator is SplitMix64 (Steele, Lea & Flood 2014); normals come from the Box–Muller
//! transform.

use burn::tensor::{Device, Tensor, TensorData};

/// SplitMix64's increment: 2⁶⁴ divided by the golden ratio, odd.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 with a cached second Box–Muller normal.
#[derive(Clone, Debug)]
pub struct NoiseRng {
    state: u64,
    spare_normal: Option<f64>,
}

impl NoiseRng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare_normal: None,
        }
    }

    /// A seed for the independent stream number `stream` of `seed` (one per batch, step, run …): the
    /// first output of a generator seeded with `seed` mixed with the stream, so nearby seeds and
    /// streams give unrelated numbers.
    pub fn stream_seed(seed: u64, stream: u64) -> u64 {
        NoiseRng::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
    }

    /// Moves the stream on by `draws` calls of [`next_u64`](Self::next_u64) at no cost: SplitMix64's
    /// state advances by a constant each draw, so the position is a product away.
    pub fn skip(&mut self, draws: u64) {
        self.state = self.state.wrapping_add(draws.wrapping_mul(GOLDEN_GAMMA));
        self.spare_normal = None;
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform number in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform integer in `0..n` (`n > 0`), by rejection so there is no modulo bias.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "NoiseRng::below needs n > 0");
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// A standard normal draw (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        // 1 - u keeps the logarithm's argument in (0, 1].
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        let radius = (-2.0 * u1.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * u2;
        self.spare_normal = Some(radius * angle.sin());
        radius * angle.cos()
    }

    /// `n` standard normal draws as `f32`.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }

    /// A tensor of `shape` filled with standard normal draws, in row-major order.
    pub fn normal_tensor(&mut self, shape: [usize; 4], device: &Device) -> Tensor<4> {
        let n = shape.iter().product();
        Tensor::from_data(TensorData::new(self.normal_vec(n), shape), device)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_stream() {
        // First outputs of the reference C implementation (Vigna, splitmix64.c) seeded with 0.
        let mut rng = NoiseRng::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next_u64(), 0x06C4_5D18_8009_454F);
        // Skipping two draws lands on the third output of the reference stream.
        let mut skipped = NoiseRng::new(0);
        skipped.skip(2);
        assert_eq!(skipped.next_u64(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn normals_have_unit_moments() {
        let mut rng = NoiseRng::new(7);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Standard errors: 1/sqrt(n) ≈ 0.0022 for the mean, sqrt(2/n) ≈ 0.0032 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
    }

    #[test]
    fn below_stays_in_range_and_shuffle_is_a_permutation() {
        let mut rng = NoiseRng::new(3);
        let mut v: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted);
        assert!((0..1000).all(|_| rng.below(7) < 7));
    }
}
