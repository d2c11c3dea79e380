//! The forward (noising) process q(x_t | x_0) = N(√ᾱ_t x_0, (1 − ᾱ_t) I) (Ho et al. eq. 4).

use crate::diffusion::schedule::NoiseSchedule;
use burn::tensor::{Device, Tensor, TensorData};

/// x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε for a batch, each image at its own timestep.
///
/// # Shapes
/// - `x0`, `noise`: `[batch, channels, height, width]`
/// - `t`: `batch` timesteps, each in `0..T`
/// - output: `[batch, channels, height, width]`
///
/// # Panics
/// If `t.len()` is not the batch size or a timestep is out of range.
pub fn q_sample(schedule: &NoiseSchedule, x0: Tensor<4>, t: &[usize], noise: Tensor<4>) -> Tensor<4> {
    let [batch, _, _, _] = x0.dims();
    assert_eq!(t.len(), batch, "q_sample: one timestep per image");
    let device = x0.device();
    let (signal, noise_scale): (Vec<f32>, Vec<f32>) = t
        .iter()
        .map(|&t| {
            let (a, b) = schedule.q_sample_coefs(t);
            (a as f32, b as f32)
        })
        .unzip();
    let signal = per_image(signal, &device); // [batch, 1, 1, 1]
    let noise_scale = per_image(noise_scale, &device); // [batch, 1, 1, 1]
    x0 * signal + noise * noise_scale // [batch, channels, height, width]
}

/// The same formula on host pixels, for one image at one timestep (the browser's slider).
///
/// # Panics
/// If the slices differ in length or `t` is out of range.
pub fn q_sample_pixels(schedule: &NoiseSchedule, x0: &[f32], t: usize, noise: &[f32]) -> Vec<f32> {
    assert_eq!(x0.len(), noise.len(), "q_sample_pixels: x0 and noise differ in size");
    let (a, b) = schedule.q_sample_coefs(t);
    x0.iter()
        .zip(noise)
        .map(|(&x, &e)| (a * x as f64 + b * e as f64) as f32)
        .collect()
}

/// A `[batch, 1, 1, 1]` tensor of per-image scalars, to broadcast over images.
pub fn per_image(values: Vec<f32>, device: &Device) -> Tensor<4> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n, 1, 1, 1]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::schedule::NoiseSchedule;

    #[test]
    fn q_sample_matches_eq_4_by_hand() {
        // Linear schedule, t = 0: ᾱ_0 = 0.9999 → x_t = 0.99995 x_0 + 0.01 ε.
        let s = NoiseSchedule::linear(1000).unwrap();
        let out = q_sample_pixels(&s, &[1.0, -0.5], 0, &[2.0, 0.0]);
        assert!((out[0] as f64 - (0.9999f64.sqrt() + 0.02)).abs() < 1e-6);
        assert!((out[1] as f64 + 0.5 * 0.9999f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn tensor_and_pixel_versions_agree_per_image() {
        let s = NoiseSchedule::cosine(1000).unwrap();
        let device = Device::flex();
        let x0 = vec![0.25f32, -1.0, 0.5, 1.0];
        let eps = vec![1.0f32, 0.5, -2.0, 0.0];
        let x0_t = Tensor::<4>::from_data(TensorData::new(x0.clone(), [2, 1, 1, 2]), &device);
        let eps_t = Tensor::<4>::from_data(TensorData::new(eps.clone(), [2, 1, 1, 2]), &device);
        let out = q_sample(&s, x0_t, &[10, 900], eps_t).into_data();
        let out = out.as_slice::<f32>().unwrap();
        let a = q_sample_pixels(&s, &x0[..2], 10, &eps[..2]);
        let b = q_sample_pixels(&s, &x0[2..], 900, &eps[2..]);
        for (got, want) in out.iter().zip(a.iter().chain(&b)) {
            assert!((got - want).abs() < 1e-6);
        }
    }
}
