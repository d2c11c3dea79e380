//! The training loss: each image's ‖ε − ε_θ(x_t, t)‖² (per pixel), weighted by w_t and averaged
//! over the batch. w_t = 1 is Ho et al.'s L_simple (eq. 14); Min-SNR-γ is Hang et al.'s weighting.

use crate::diffusion::schedule::NoiseSchedule;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// The weight w_t of each image's ‖ε − ε̂‖² in the training loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum LossWeighting {
    /// w_t = 1: Ho et al.'s L_simple (eq. 14).
    #[default]
    Simple,
    /// w_t = min(SNR(t), γ) / SNR(t): Min-SNR-γ for ε-prediction (Hang et al. 2023, eq. 10),
    /// which down-weights the low-noise steps whose gradients conflict with the rest.
    MinSnr {
        /// γ (the paper's choice is 5).
        gamma: f64,
    },
}

impl LossWeighting {
    /// w_t for each timestep of a batch.
    pub fn weights(self, schedule: &NoiseSchedule, t: &[usize]) -> Vec<f64> {
        match self {
            LossWeighting::Simple => vec![1.0; t.len()],
            LossWeighting::MinSnr { gamma } => t
                .iter()
                .map(|&t| {
                    let snr = schedule.snr(t);
                    snr.min(gamma) / snr
                })
                .collect(),
        }
    }
}

/// The loss of one training step: the mean over the batch of w_t · mean‖ε − ε̂‖² per image.
///
/// # Shapes
/// - `eps`, `noise`: `[b, c, h, w]`; `t`: `b` timesteps.
/// - returns `[1]`.
pub fn training_loss(
    eps: Tensor<4>,
    noise: Tensor<4>,
    t: &[usize],
    weighting: LossWeighting,
    schedule: &NoiseSchedule,
) -> Tensor<1> {
    let batch = t.len();
    let device = eps.device();
    match weighting {
        LossWeighting::Simple => (eps - noise).square().mean(), // [1]
        weighting => {
            let w = weighting
                .weights(schedule, t)
                .iter()
                .map(|&w| w as f32)
                .collect::<Vec<_>>();
            let w = Tensor::<1>::from_data(TensorData::new(w, [batch]), &device); // [b]
            let per_image = (eps - noise).square().mean_dims(&[1, 2, 3]).reshape([batch]); // [b]
            (per_image * w).mean() // [1]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn min_snr_weights_cap_the_signal_to_noise_ratio() {
        let schedule = NoiseSchedule::linear(1000).unwrap();
        // t = 0: ᾱ = 1 − 1e-4, SNR = 0.9999/0.0001 = 9999, so w = 5/9999; at t = 999 SNR ≈ 4e-5 < 5: w = 1.
        let w = LossWeighting::MinSnr { gamma: 5.0 }.weights(&schedule, &[0, 999]);
        assert!((w[0] - 5.0 / 9999.0).abs() < 1e-9, "{w:?}");
        assert_eq!(w[1], 1.0);
        assert_eq!(LossWeighting::Simple.weights(&schedule, &[0, 999]), vec![1.0, 1.0]);
    }

    /// Zero predictions against noise images of constant value 1 and 2 (mean squares 1 and 4):
    /// L_simple is (1 + 4)/2 = 2.5; Min-SNR-5 at t = 0 and 999 weighs them by 5/9999 (SNR_0 =
    /// 0.9999/0.0001) and 1 (SNR_999 ≈ 4e-5 < 5): (5/9999 · 1 + 1 · 4)/2.
    #[test]
    fn the_step_loss_weighs_each_image_by_its_timestep() {
        let device = Device::flex();
        let schedule = NoiseSchedule::linear(1000).unwrap();
        let eps = Tensor::<4>::zeros([2, 1, 3, 3], &device);
        let noise = Tensor::<1>::from_floats([1.0, 2.0], &device)
            .reshape([2, 1, 1, 1])
            .expand([2, 1, 3, 3]);
        let loss = |w: LossWeighting, t: &[usize]| {
            training_loss(eps.clone(), noise.clone(), t, w, &schedule).into_scalar::<f32>() as f64
        };
        assert!((loss(LossWeighting::Simple, &[0, 999]) - 2.5).abs() < 1e-6);
        let min_snr = LossWeighting::MinSnr { gamma: 5.0 };
        let expected = (5.0 / 9999.0 + 4.0) / 2.0;
        assert!(
            (loss(min_snr, &[0, 999]) - expected).abs() < 1e-6,
            "{}",
            loss(min_snr, &[0, 999])
        );
        // Both images at high noise: every weight is 1, as L_simple.
        assert!((loss(min_snr, &[999, 999]) - 2.5).abs() < 1e-6);
    }
}
