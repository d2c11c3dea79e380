//! The schedules against independent values: diffusers' reference numbers, ᾱ as a product term by
//! term, the cosine schedule's eq. 17, the posterior by Gaussian conditioning, nearest noise levels.

use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn nearest_t_maps_a_noise_level_across_schedules() {
    let linear = NoiseSchedule::linear(1000).unwrap();
    // On its own schedule every t maps to itself.
    assert!((0..1000).all(|t| linear.nearest_t(linear.alpha_bar[t]) == t));
    // Ends: above ᾱ_0 is t = 0, below ᾱ_999 is t = 999.
    assert_eq!(linear.nearest_t(1.0), 0);
    assert_eq!(linear.nearest_t(0.0), 999);
    // Cosine at t/T = 0.5 has ᾱ = cos²(π/2 · 0.508/1.008) / cos²(π/2 · 0.008/1.008) ≈ 0.4938
    // (Nichol & Dhariwal eq. 17); the linear ᾱ_t = ∏(1 − β_i), written out here, is nearest to it
    // at t = 260 (0.4950): the cosine schedule keeps more signal for longer.
    let cos = |u: f64| (std::f64::consts::FRAC_PI_2 * (u + 0.008) / 1.008).cos().powi(2);
    let target = cos(500.0 / 1000.0) / cos(0.0);
    let linear_ab = |t: usize| {
        (0..=t)
            .map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
            .product::<f64>()
    };
    let expected = (0..1000)
        .min_by(|&a, &b| (linear_ab(a) - target).abs().total_cmp(&(linear_ab(b) - target).abs()))
        .unwrap();
    assert_eq!(expected, 260);
    assert_eq!(linear.nearest_t(target), expected);
}

#[test]
fn linear_posterior_variance_matches_diffusers_reference_values() {
    // diffusers tests/schedulers/test_scheduler_ddpm.py::test_variance (fixed_small, linear
    // 1e-4..0.02, T = 1000): variance(0) = 0, variance(487) = 0.00979, variance(999) = 0.02.
    let s = NoiseSchedule::linear(1000).unwrap();
    assert_eq!(s.posterior_variance[0], 0.0);
    assert!(close(s.posterior_variance[487], 0.00979, 1e-5));
    assert!(close(s.posterior_variance[999], 0.02, 1e-5));
}

#[test]
fn linear_alpha_bar_matches_the_closed_form_product() {
    // ᾱ_t = ∏_{i=0}^{t} (1 − 1e-4 − i·δ), δ = (0.02 − 1e-4)/999; computed here term by term
    // in log space, independently of the schedule's running product.
    let s = NoiseSchedule::linear(1000).unwrap();
    let delta = (0.02 - 1e-4) / 999.0;
    for &t in &[0usize, 1, 10, 250, 500, 999] {
        let log_ab: f64 = (0..=t).map(|i| (1.0 - 1e-4 - delta * i as f64).ln()).sum();
        assert!(close(s.alpha_bar[t], log_ab.exp(), 1e-12), "t = {t}");
    }
    // Hand values: ᾱ_0 = 0.9999, ᾱ_1 = 0.9999 · (1 − 1e-4 − δ).
    assert!(close(s.alpha_bar[0], 0.9999, 1e-15));
    assert!(close(s.alpha_bar[1], 0.9999 * (0.9999 - 0.0199 / 999.0), 1e-15));
    // Published figure: ᾱ_T ≈ 4.04e-5 for the DDPM linear schedule (√ᾱ_T ≈ 0.00635).
    assert!(close(s.alpha_bar[999], 4.04e-5, 0.01e-5), "{}", s.alpha_bar[999]);
}

#[test]
fn cosine_alpha_bar_follows_eq_17() {
    let s = NoiseSchedule::cosine(1000).unwrap();
    let f = |t: f64| {
        ((t / 1000.0 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
            .cos()
            .powi(2)
    };
    // Where β is not clipped, ᾱ_t telescopes to f(t+1)/f(0).
    for &t in &[0usize, 100, 500, 900] {
        assert!(close(s.alpha_bar[t], f(t as f64 + 1.0) / f(0.0), 1e-12), "t = {t}");
    }
    // The last β is clipped at 0.999 (f(T) = cos²(π/2) = 0 would give β = 1).
    assert_eq!(s.betas[999], 0.999);
    assert!(s.betas.iter().all(|&b| b <= 0.999));
}

#[test]
fn posterior_coefficients_match_gaussian_conditioning() {
    // Independent derivation for one step: q(x_{t-1}|x_t,x_0) ∝ N(x_t; √α_t x_{t-1}, β_t)
    // · N(x_{t-1}; √ᾱ_{t-1} x_0, 1 − ᾱ_{t-1}). Product of Gaussians: precision = α_t/β_t +
    // 1/(1 − ᾱ_{t-1}); mean = var · (√α_t x_t / β_t + √ᾱ_{t-1} x_0 / (1 − ᾱ_{t-1})).
    for kind in [ScheduleKind::Linear, ScheduleKind::Cosine] {
        let s = NoiseSchedule::new(kind, 1000).unwrap();
        for &t in &[1usize, 37, 500, 998] {
            let (a, b, abp) = (s.alphas[t], s.betas[t], s.alpha_bar_prev[t]);
            let var = 1.0 / (a / b + 1.0 / (1.0 - abp));
            let c_x0 = var * abp.sqrt() / (1.0 - abp);
            let c_xt = var * a.sqrt() / b;
            assert!(close(s.posterior_variance[t], var, 1e-12 * var.max(1.0)));
            assert!(close(s.posterior_mean_coef1[t], c_x0, 1e-9), "{kind} t={t}");
            assert!(close(s.posterior_mean_coef2[t], c_xt, 1e-9), "{kind} t={t}");
        }
    }
}

#[test]
fn log_variance_is_clipped_at_t0_and_snr_is_monotone() {
    let s = NoiseSchedule::linear(1000).unwrap();
    assert_eq!(s.posterior_log_variance_clipped[0], s.posterior_variance[1].ln());
    assert!(close(
        s.posterior_log_variance_clipped[5],
        s.posterior_variance[5].ln(),
        0.0
    ));
    // SNR_0 = 0.9999 / 1e-4 = 9999.
    assert!(close(s.snr(0), 9999.0, 1e-6));
    assert!(s.alpha_bar.windows(2).all(|w| w[1] < w[0]));
}

#[test]
fn bad_arguments_are_errors() {
    assert_eq!(NoiseSchedule::linear(0), Err(ScheduleError::NoTimesteps));
    let s = NoiseSchedule::linear(1000).unwrap();
    assert_eq!(
        s.row(1000),
        Err(ScheduleError::TimestepOutOfRange {
            t: 1000,
            timesteps: 1000
        })
    );
    assert!("quadratic".parse::<ScheduleKind>().is_err());
    assert_eq!("Cosine".parse::<ScheduleKind>(), Ok(ScheduleKind::Cosine));
    assert!(matches!(
        NoiseSchedule::from_betas(ScheduleKind::Linear, vec![0.1, 1.0]),
        Err(ScheduleError::InvalidBeta { t: 1, .. })
    ));
}
