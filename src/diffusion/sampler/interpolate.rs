//! Walking between two samples through the latent x_T: spherical interpolation of two seeds' noise,
//! decoded by deterministic DDIM (η = 0), whose x_T → x_0 map is a fixed function (Song et al. §5.3).

use super::{EpsModel, ReverseChain, SamplerPlan};
use crate::rng::NoiseRng;
use burn::tensor::{Device, Tensor, TensorData};

/// Spherical interpolation between `a` and `b` at `t` ∈ [0, 1]: along the great circle through both
/// (Shoemake 1985), which keeps the norm of Gaussian noise where x_T lives, unlike a straight line
/// (its midpoint has ~1/√2 of the norm). Falls back to the straight line for (anti)parallel vectors.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Vec<f32> {
    if t == 0.0 {
        return a.to_vec();
    }
    if t == 1.0 {
        return b.to_vec();
    }
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
    let cos = (dot(a, b) / (dot(a, a).sqrt() * dot(b, b).sqrt())).clamp(-1.0, 1.0);
    let theta = cos.acos();
    let (wa, wb) = if theta.sin().abs() < 1e-6 {
        (1.0 - t, t)
    } else {
        (((1.0 - t) * theta).sin() / theta.sin(), (t * theta).sin() / theta.sin())
    };
    a.iter()
        .zip(b)
        .map(|(&p, &q)| (wa * p as f64 + wb * q as f64) as f32)
        .collect()
}

/// The latent x_T that [`ReverseChain::from_noise`] draws for one image from `seed`.
pub fn latent_of_seed(seed: u64, per_image: usize) -> Vec<f32> {
    NoiseRng::new(seed).normal_vec(per_image)
}

/// `frames` latents evenly spaced by [`slerp`] from seed `a`'s x_T to seed `b`'s, decoded by
/// `sampler` (use deterministic DDIM: then the ends are exactly the two seeds' own samples).
///
/// # Shapes
/// - `image`: `[channels, height, width]` of one sample; returns `[frames, channels, height, width]`
pub fn interpolate_seeds<M: EpsModel>(
    model: &M,
    sampler: SamplerPlan,
    image: [usize; 3],
    (a, b): (u64, u64),
    frames: usize,
    device: &Device,
) -> Tensor<4> {
    let x_t = interpolation_latents(image, (a, b), frames, device); // [frames, c, h, w]
    ReverseChain::from_latent(model, sampler, x_t, a).run()
}

/// The `frames` latents of [`interpolate_seeds`], for a caller that runs the chain itself (the page
/// steps it, drawing as it goes).
///
/// # Shapes
/// - `image`: `[channels, height, width]` of one sample; returns `[frames, channels, height, width]`
pub fn interpolation_latents(image: [usize; 3], (a, b): (u64, u64), frames: usize, device: &Device) -> Tensor<4> {
    let per_image = image.iter().product();
    let (za, zb) = (latent_of_seed(a, per_image), latent_of_seed(b, per_image));
    let steps = frames.max(2) - 1;
    let latents: Vec<f32> = (0..frames)
        .flat_map(|k| slerp(&za, &zb, k as f64 / steps as f64))
        .collect();
    let shape = [frames, image[0], image[1], image[2]];
    Tensor::<4>::from_data(TensorData::new(latents, shape), device) // [frames, c, h, w]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::sampler::SamplerConfig;
    use crate::diffusion::schedule::NoiseSchedule;

    #[test]
    fn slerp_keeps_the_ends_and_the_norm() {
        let (a, b) = ([1.0f32, 0.0], [0.0f32, 1.0]);
        assert_eq!(slerp(&a, &b, 0.0), a.to_vec());
        assert_eq!(slerp(&a, &b, 1.0), b.to_vec());
        // Halfway round a quarter circle: (cos 45°, sin 45°), norm 1 (a straight line gives 0.707).
        let mid = slerp(&a, &b, 0.5);
        assert!((mid[0] - 0.5f32.sqrt()).abs() < 1e-7 && (mid[1] - 0.5f32.sqrt()).abs() < 1e-7);
        // A third of the way: (cos 30°, sin 30°).
        let third = slerp(&a, &b, 1.0 / 3.0);
        assert!((third[0] - 0.75f32.sqrt()).abs() < 1e-6 && (third[1] - 0.5).abs() < 1e-6);
    }

    /// ε̂ = x_t / 2, a stand-in for the U-Net: any fixed ε-predictor makes DDIM (η = 0) a fixed map.
    struct Identity;
    impl EpsModel for Identity {
        fn predict_eps(&self, x_t: Tensor<4>, _t: &[usize]) -> Tensor<4> {
            x_t.mul_scalar(0.5)
        }
    }

    #[test]
    fn the_ends_of_the_walk_are_the_two_seeds_own_samples() {
        let device = Device::flex();
        let schedule = NoiseSchedule::linear(1000).unwrap();
        let ddim = SamplerConfig::Ddim {
            steps: 10,
            eta: 0.0,
            clip_x0: true,
        };
        let strip = interpolate_seeds(&Identity, ddim.build(&schedule).unwrap(), [1, 4, 4], (3, 8), 5, &device);
        assert_eq!(strip.dims(), [5, 1, 4, 4]);
        let strip = strip.into_data().as_slice::<f32>().unwrap().to_vec();
        for (seed, frame) in [(3u64, 0usize), (8, 4)] {
            let own = ReverseChain::from_noise(&Identity, ddim.build(&schedule).unwrap(), [1, 1, 4, 4], seed, &device)
                .run()
                .into_data();
            let own = own.as_slice::<f32>().unwrap();
            let end = &strip[frame * 16..(frame + 1) * 16];
            for (x, y) in end.iter().zip(own) {
                assert!((x - y).abs() < 1e-6, "seed {seed}: {x} vs {y}");
            }
        }
        // The middle differs from both ends.
        assert!(
            strip[32..48]
                .iter()
                .zip(&strip[..16])
                .any(|(x, y)| (x - y).abs() > 1e-3)
        );
    }
}
