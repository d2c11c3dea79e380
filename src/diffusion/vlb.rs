//! The variational bound L = L_T + Σ_{t>1} L_{t−1} + L_0 (Ho et al. eq. 5), in bits per dimension.
//!
//! Formulas follow Ho et al. (2020) and the reference code of Nichol & Dhariwal (2021): KL
//! divergences between Gaussians for the L_{t−1} terms and the prior L_T, and a discretised
//! Gaussian decoder for L_0 over 256 pixel bins of width 2/255 on [−1, 1].

use crate::diffusion::forward::q_sample;
use crate::diffusion::sampler::{EpsModel, VarianceKind};
use crate::diffusion::schedule::NoiseSchedule;
use crate::rng::NoiseRng;
use burn::tensor::Tensor;
use std::f64::consts::{LN_2, PI};

/// KL(N(μ₁, e^{logvar₁}) ‖ N(μ₂, e^{logvar₂})) in nats.
pub fn normal_kl(mean1: f64, logvar1: f64, mean2: f64, logvar2: f64) -> f64 {
    0.5 * (-1.0 + logvar2 - logvar1 + (logvar1 - logvar2).exp() + (mean1 - mean2).powi(2) * (-logvar2).exp())
}

/// The standard normal CDF, by the tanh approximation the reference implementations use.
pub fn approx_standard_normal_cdf(x: f64) -> f64 {
    0.5 * (1.0 + ((2.0 / PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// log p(x) of a pixel `x` ∈ [−1, 1] (on the grid of 256 values) under a Gaussian of `mean` and
/// log standard deviation `log_scale`, integrated over the pixel's bin (Ho et al. eq. 13); the
/// edge bins extend to ±∞.
pub fn discretized_gaussian_log_likelihood(x: f64, mean: f64, log_scale: f64) -> f64 {
    let centered = x - mean;
    let inv_std = (-log_scale).exp();
    let cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0));
    let cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0));
    if x < -0.999 {
        cdf_plus.max(1e-12).ln()
    } else if x > 0.999 {
        (1.0 - cdf_min).max(1e-12).ln()
    } else {
        (cdf_plus - cdf_min).max(1e-12).ln()
    }
}

/// L_T = KL(q(x_T | x_0) ‖ N(0, I)) for one image, in bits per dimension.
pub fn prior_bits_per_dim(schedule: &NoiseSchedule, x0: &[f32]) -> f64 {
    let last = schedule.timesteps() - 1;
    let (a, _) = schedule.q_sample_coefs(last);
    let logvar = (1.0 - schedule.alpha_bar[last]).ln();
    x0.iter()
        .map(|&x| normal_kl(a * x as f64, logvar, 0.0, 0.0))
        .sum::<f64>()
        / x0.len() as f64
        / LN_2
}

/// The bound's term at timestep `t` for one image, in bits per dimension: L_{t−1} = KL(q(x_{t−1} |
/// x_t, x_0) ‖ p(x_{t−1} | x_t)) for t > 0, and L_0 = −log p(x_0 | x_1) at t = 0 (0-based t).
///
/// `eps` is the model's ε̂(x_t, t); the model's mean uses x̂_0 clipped to [−1, 1], as the reference
/// implementation evaluates it.
pub fn vlb_term_bits_per_dim(
    schedule: &NoiseSchedule,
    variance: VarianceKind,
    t: usize,
    x0: &[f32],
    x_t: &[f32],
    eps: &[f32],
) -> f64 {
    let (c1, c2) = (schedule.posterior_mean_coef1[t], schedule.posterior_mean_coef2[t]);
    let (r, rm1) = schedule.predict_x0_coefs(t);
    let model_logvar = variance.log_variance(schedule, t);
    let true_logvar = schedule.posterior_log_variance_clipped[t];
    let total: f64 = x0
        .iter()
        .zip(x_t)
        .zip(eps)
        .map(|((&x0, &xt), &e)| {
            let (x0, xt, e) = (x0 as f64, xt as f64, e as f64);
            let pred_x0 = (r * xt - rm1 * e).clamp(-1.0, 1.0);
            let model_mean = c1 * pred_x0 + c2 * xt;
            if t == 0 {
                -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
            } else {
                let true_mean = c1 * x0 + c2 * xt;
                normal_kl(true_mean, true_logvar, model_mean, model_logvar)
            }
        })
        .sum();
    total / x0.len() as f64 / LN_2
}

/// The full bound for a batch, term by term.
#[derive(Clone, Debug, PartialEq)]
pub struct VlbEstimate {
    /// L_T per image (bits/dim).
    pub prior: Vec<f64>,
    /// Σ_t L_t per image (bits/dim), each evaluated t once with fresh noise.
    pub terms: Vec<f64>,
    /// L_0 per image (bits/dim), part of `terms` too.
    pub decoder: Vec<f64>,
}

impl VlbEstimate {
    /// Total bits/dim per image: L_T + Σ L_t.
    pub fn total(&self) -> Vec<f64> {
        self.prior.iter().zip(&self.terms).map(|(p, t)| p + t).collect()
    }
}

/// Negative log-likelihood bound of `x0` (`[batch, c, h, w]`, values on the 256-level grid in
/// [−1, 1]) in bits per dimension. Reads results back synchronously, so it is for native use (an
/// evaluation tool), not the browser. `on_progress` is called with the number of timesteps done.
///
/// `stride = 1` evaluates every term, one model evaluation per timestep (T in all), as Ho et al.
/// report the bound. `stride = k > 1` evaluates L_0 and every k-th of the terms t = 1 … T−1 (a
/// systematic sample from a seeded random offset in 1 ..= k) and weights each by k: every term is
/// drawn with probability 1/k, so the estimate is unbiased, at a k-th of the cost.
pub fn estimate_bits_per_dim<M: EpsModel>(
    model: &M,
    schedule: &NoiseSchedule,
    variance: VarianceKind,
    x0: Tensor<4>,
    seed: u64,
    stride: usize,
    on_progress: impl FnMut(usize),
) -> VlbEstimate {
    estimate_bits_per_dim_for(model, schedule, &[variance], x0, seed, stride, on_progress)
        .pop()
        .expect("one variance in, one estimate out")
}

/// [`estimate_bits_per_dim`] for several reverse-process variances at once: the model is evaluated
/// once per timestep and every variance's bound is computed from the same ε̂ and the same noise.
pub fn estimate_bits_per_dim_for<M: EpsModel>(
    model: &M,
    schedule: &NoiseSchedule,
    variances: &[VarianceKind],
    x0: Tensor<4>,
    seed: u64,
    stride: usize,
    mut on_progress: impl FnMut(usize),
) -> Vec<VlbEstimate> {
    let shape = x0.dims();
    let batch = shape[0];
    let per_image = shape[1] * shape[2] * shape[3];
    let device = x0.device();
    let x0_host = x0.to_data().as_slice::<f32>().expect("f32 images").to_vec();
    let mut rng = NoiseRng::new(seed);
    let prior: Vec<f64> = x0_host
        .chunks(per_image)
        .map(|img| prior_bits_per_dim(schedule, img))
        .collect();
    let stride = stride.max(1);
    let offset = 1 + rng.below(stride);
    let sampled: Vec<usize> = (offset..schedule.timesteps()).step_by(stride).collect();
    // Every t ≥ 1 is evaluated for exactly one of the `stride` equally likely offsets.
    let weight = stride as f64;
    let mut estimates: Vec<VlbEstimate> = variances
        .iter()
        .map(|_| VlbEstimate {
            prior: prior.clone(),
            terms: vec![0.0; batch],
            decoder: vec![0.0; batch],
        })
        .collect();
    for (done, t) in std::iter::once(0).chain(sampled).enumerate() {
        let noise = rng.normal_tensor(shape, &device); // [b, c, h, w]
        let ts = vec![t; batch];
        let x_t = q_sample(schedule, x0.clone(), &ts, noise); // [b, c, h, w]
        let eps = model.predict_eps(x_t.clone(), &ts); // [b, c, h, w]
        let x_t = x_t.into_data().as_slice::<f32>().expect("f32").to_vec();
        let eps = eps.into_data().as_slice::<f32>().expect("f32").to_vec();
        for (estimate, &variance) in estimates.iter_mut().zip(variances) {
            for i in 0..batch {
                let r = i * per_image..(i + 1) * per_image;
                let bits = vlb_term_bits_per_dim(schedule, variance, t, &x0_host[r.clone()], &x_t[r.clone()], &eps[r]);
                if t == 0 {
                    estimate.decoder[i] = bits;
                    estimate.terms[i] += bits;
                } else {
                    estimate.terms[i] += weight * bits;
                }
            }
        }
        on_progress(done + 1);
    }
    estimates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kl_of_gaussians_matches_closed_forms() {
        // KL(N(0,1) ‖ N(1,1)) = 1/2 nat; KL(N(0,1) ‖ N(0,e)) = ½(1 − 1 + e^{-1}) … by hand:
        // ½(−1 + log σ₂² − log σ₁² + σ₁²/σ₂²) = ½(−1 + 1 + e^{−1}) = 0.18393972.
        assert!((normal_kl(0.0, 0.0, 1.0, 0.0) - 0.5).abs() < 1e-15);
        assert!((normal_kl(0.0, 0.0, 0.0, 1.0) - 0.183_939_720_585_721_2).abs() < 1e-12);
        assert_eq!(normal_kl(0.3, -2.0, 0.3, -2.0), 0.0);
    }

    #[test]
    fn normal_cdf_approximation_is_close_to_the_true_cdf() {
        // Φ(1) = 0.8413447, Φ(−2) = 0.0227501 (tables); the tanh approximation is good to ~1e-3.
        assert!((approx_standard_normal_cdf(0.0) - 0.5).abs() < 1e-15);
        assert!((approx_standard_normal_cdf(1.0) - 0.841_344_7).abs() < 1e-3);
        assert!((approx_standard_normal_cdf(-2.0) - 0.022_750_1).abs() < 1e-3);
    }

    #[test]
    fn discretized_likelihood_of_a_sharp_and_a_wide_gaussian() {
        // A wide unit Gaussian at 0: the bin [−1/255, 1/255] has mass ≈ φ(0)·2/255 = 0.00312877.
        let ll = discretized_gaussian_log_likelihood(0.0, 0.0, 0.0);
        assert!((ll - (0.398_942_28f64 * 2.0 / 255.0).ln()).abs() < 1e-4, "{ll}");
        // A very sharp Gaussian centred on the pixel puts all its mass in the bin: log 1 = 0.
        assert!(discretized_gaussian_log_likelihood(0.2, 0.2, -10.0).abs() < 1e-9);
        // Edge bins extend to infinity: x = −1 with the mean ten σ below → probability 1 − 1e-23.
        assert!(discretized_gaussian_log_likelihood(-1.0, -10.0, 0.0).abs() < 1e-9);
        // …and x = 1 with the mean at 1: the upper half of the Gaussian plus half a bin,
        // Φ(1/255) ≈ 0.5 + 0.39894/255 = 0.5015645.
        let ll = discretized_gaussian_log_likelihood(1.0, 1.0, 0.0);
        assert!((ll - 0.501_564_5f64.ln()).abs() < 1e-4, "{ll}");
        // The 256 bins of a unit Gaussian sum to 1.
        let total: f64 = (0..256)
            .map(|k| discretized_gaussian_log_likelihood(k as f64 / 127.5 - 1.0, 0.1, 0.0).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn the_prior_term_is_tiny_for_the_linear_schedule() {
        // Ho et al. Table 2 reports L_T ≈ 0 (≈ 1e-5 bits/dim) for CIFAR-10; for x_0 = 1
        // everywhere: KL = ½(−1 − log(1−ᾱ_T) + (1−ᾱ_T) + ᾱ_T) / ln 2, ᾱ_T = 4.0358e-5.
        let s = NoiseSchedule::linear(1000).unwrap();
        let ab = 4.035_829_765_375_675e-5f64;
        let expect = 0.5 * (-1.0 - (1.0 - ab).ln() + (1.0 - ab) + ab) / LN_2;
        let got = prior_bits_per_dim(&s, &[1.0; 4]);
        assert!((got - expect).abs() < 1e-9, "{got} vs {expect}");
        assert!(got < 1e-4);
    }

    #[test]
    fn a_perfect_denoiser_pays_nothing_at_t_above_zero() {
        // With ε̂ = the true ε, x̂_0 = x_0, so the model's mean equals the posterior mean and, with
        // σ² = β̃, the KL is exactly 0.
        let s = NoiseSchedule::linear(1000).unwrap();
        let x0 = [0.5f32, -0.25];
        let eps = [1.0f32, -0.5];
        let xt = crate::diffusion::forward::q_sample_pixels(&s, &x0, 300, &eps);
        let bits = vlb_term_bits_per_dim(&s, VarianceKind::BetaTilde, 300, &x0, &xt, &eps);
        assert!(bits.abs() < 1e-6, "{bits}");
        // With σ² = β the variances differ: KL = ½(−1 + log(β/β̃) + β̃/β) per dim (means equal).
        let (b, bt) = (s.betas[300], s.posterior_variance[300]);
        let expect = 0.5 * (-1.0 + (b / bt).ln() + bt / b) / LN_2;
        let bits = vlb_term_bits_per_dim(&s, VarianceKind::Beta, 300, &x0, &xt, &eps);
        assert!((bits - expect).abs() < 1e-6, "{bits} vs {expect}");
    }

    /// The ε-predictor that is exact for data that are the point mass at `c`: ε̂ = (x_t − √ᾱ_t c)/√(1−ᾱ_t),
    /// so x̂_0 = c whatever the noise, and every term of the bound is a number we can write down.
    struct PointMassOracle {
        schedule: NoiseSchedule,
        c: f32,
    }

    impl EpsModel for PointMassOracle {
        fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
            let ab = self.schedule.alpha_bar[t[0]];
            x_t.sub_scalar(ab.sqrt() * self.c as f64).div_scalar((1.0 - ab).sqrt())
        }
    }

    /// The whole bound written out from the βs for a 1-pixel image x_0 and the oracle above:
    /// L_T + Σ_{t≥1} KL(N(c1(x_0), β̃_t) ‖ N(c1(c), β̃_t)) + L_0, in bits/dim.
    fn exhaustive_bits(betas: &[f64], x0: f64, c: f64) -> f64 {
        let mut alpha_bar = Vec::new();
        let mut prod = 1.0;
        for b in betas {
            prod *= 1.0 - b;
            alpha_bar.push(prod);
        }
        let tilde = |t: usize| {
            let prev = if t == 0 { 1.0 } else { alpha_bar[t - 1] };
            betas[t] * (1.0 - prev) / (1.0 - alpha_bar[t])
        };
        let last = betas.len() - 1;
        // L_T = KL(N(√ᾱ_T x_0, 1 − ᾱ_T) ‖ N(0, 1)).
        let v = 1.0 - alpha_bar[last];
        let prior = 0.5 * (-1.0 - v.ln() + v + alpha_bar[last] * x0 * x0);
        // L_{t−1}: equal variances, so KL = (Δμ)²/(2β̃_t) with Δμ = β_t √ᾱ_{t−1}/(1 − ᾱ_t) · (x_0 − c).
        let kl: f64 = (1..betas.len())
            .map(|t| {
                let coef1 = betas[t] * alpha_bar[t - 1].sqrt() / (1.0 - alpha_bar[t]);
                (coef1 * (x0 - c)).powi(2) / (2.0 * tilde(t))
            })
            .sum();
        // L_0: the decoder's mean is x̂_0 = c, its variance β̃ at t = 1 (the clipped log-variance).
        let decoder = -discretized_gaussian_log_likelihood(x0, c, 0.5 * tilde(1).ln());
        (prior + kl + decoder) / LN_2
    }

    #[test]
    fn the_estimator_equals_the_exhaustive_bound_and_its_stride_is_unbiased() {
        let betas = vec![0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let schedule =
            NoiseSchedule::from_betas(crate::diffusion::schedule::ScheduleKind::Linear, betas.clone()).unwrap();
        let (x0, c) = (0.6f32, 0.2f32);
        let expect = exhaustive_bits(&betas, x0 as f64, c as f64);
        let model = PointMassOracle {
            schedule: schedule.clone(),
            c,
        };
        let device = burn::tensor::Device::flex();
        let image = || Tensor::<4>::full([1, 1, 1, 1], x0, &device);
        let estimate = |seed, stride| {
            let e = estimate_bits_per_dim(
                &model,
                &schedule,
                VarianceKind::BetaTilde,
                image(),
                seed,
                stride,
                |_| (),
            );
            e.total()[0]
        };
        // Every term once (stride 1): the exhaustive bound, whatever the noise.
        for seed in 0..3 {
            let got = estimate(seed, 1);
            assert!((got - expect).abs() < 1e-5 * expect, "{got} vs {expect}");
        }
        // Stride 3: the 3 offsets give 3 different estimates whose mean is the bound (unbiased).
        let mut seen: Vec<f64> = Vec::new();
        for seed in 0..64 {
            let got = estimate(seed, 3);
            // The same offset gives the same value up to f32 round-off in the noise.
            if !seen.iter().any(|s| (s - got).abs() < 1e-5 * got) {
                seen.push(got);
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        let mean = seen.iter().sum::<f64>() / 3.0;
        assert!((mean - expect).abs() < 1e-5 * expect, "{mean} vs {expect}");
    }
}
