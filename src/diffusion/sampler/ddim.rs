//! DDIM sampling (Song, Meng & Ermon 2021) over a trailing sub-sequence of timesteps.

use super::{SamplerError, SamplerPlan, StepCoefs, check_start};
use crate::diffusion::schedule::NoiseSchedule;

/// The "trailing" timestep spacing (Lin et al. 2024, Table 2; diffusers' `timestep_spacing =
/// "trailing"`): round(T − i·T/N) − 1 for i = 0..N, so the first step is always t = T − 1.
/// Ties round to even, as NumPy's `round` does.
pub fn trailing_timesteps(timesteps: usize, steps: usize) -> Result<Vec<usize>, SamplerError> {
    if steps == 0 {
        return Err(SamplerError::ZeroSteps);
    }
    if steps > timesteps {
        return Err(SamplerError::TooManySteps { steps, timesteps });
    }
    let ratio = timesteps as f64 / steps as f64;
    Ok((0..steps)
        .map(|i| (timesteps as f64 - i as f64 * ratio).round_ties_even() as usize - 1)
        .collect())
}

impl SamplerPlan {
    /// DDIM with stochasticity η ∈ [0, 1] over `steps` trailing timesteps of `schedule`.
    pub fn ddim(schedule: &NoiseSchedule, steps: usize, eta: f64, clip_x0: bool) -> Result<Self, SamplerError> {
        check_eta(eta)?;
        let timesteps = trailing_timesteps(schedule.timesteps(), steps)?;
        Ok(Self::ddim_over(schedule, &timesteps, eta, clip_x0))
    }

    /// SDEdit's DDIM: the first step denoises exactly `start_t` (the timestep the input was noised
    /// to), then the chain continues on the `steps`-step trailing sequence below it. DDIM's update
    /// (eq. 12) holds between any two timesteps, so the first jump may be shorter than the rest.
    pub fn ddim_from(
        schedule: &NoiseSchedule,
        steps: usize,
        eta: f64,
        clip_x0: bool,
        start_t: usize,
    ) -> Result<Self, SamplerError> {
        check_eta(eta)?;
        check_start(schedule, start_t)?;
        let below = trailing_timesteps(schedule.timesteps(), steps)?
            .into_iter()
            .filter(|&t| t < start_t);
        let timesteps: Vec<usize> = std::iter::once(start_t).chain(below).collect();
        Ok(Self::ddim_over(schedule, &timesteps, eta, clip_x0))
    }

    /// The plan over a descending `timesteps` sequence.
    fn ddim_over(schedule: &NoiseSchedule, timesteps: &[usize], eta: f64, clip_x0: bool) -> Self {
        let coefs = (0..timesteps.len())
            .map(|i| ddim_step_coefs(schedule, timesteps[i], timesteps.get(i + 1).copied(), eta))
            .collect();
        Self::from_coefs(coefs, clip_x0)
    }
}

pub(super) fn check_eta(eta: f64) -> Result<(), SamplerError> {
    if (0.0..=1.0).contains(&eta) {
        Ok(())
    } else {
        Err(SamplerError::EtaOutOfRange(eta))
    }
}

fn ddim_step_coefs(schedule: &NoiseSchedule, t: usize, prev_t: Option<usize>, eta: f64) -> StepCoefs {
    let alpha_bar = schedule.alpha_bar[t];
    // ᾱ of the final step is 1: the last update lands exactly on x̂_0.
    let alpha_bar_prev = prev_t.map_or(1.0, |p| schedule.alpha_bar[p]);
    // x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t   (Song et al. eq. 12, "predicted x_0")
    let (x0_from_xt, x0_from_eps) = schedule.predict_x0_coefs(t);
    // σ_t(η) = η √((1 − ᾱ_prev)/(1 − ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev)   (eq. 16)
    let sigma = eta * ((1.0 - alpha_bar_prev) / (1.0 - alpha_bar)).sqrt() * (1.0 - alpha_bar / alpha_bar_prev).sqrt();
    // x_prev = √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ_t²) ε̂ + σ_t z   (eq. 12)
    let c_eps = (1.0 - alpha_bar_prev - sigma * sigma).max(0.0).sqrt();
    StepCoefs {
        t,
        prev_t,
        alpha_bar,
        alpha_bar_prev,
        x0_from_xt,
        x0_from_eps,
        c_x0: alpha_bar_prev.sqrt(),
        c_xt: 0.0,
        c_eps,
        sigma,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_spacing_matches_diffusers() {
        // diffusers DDIMScheduler(timestep_spacing="trailing").set_timesteps(N).timesteps:
        // np.round(np.arange(1000, 0, -1000/N)).astype(int) - 1.
        let ts = trailing_timesteps(1000, 50).unwrap();
        assert_eq!(ts.len(), 50);
        assert_eq!(&ts[..3], &[999, 979, 959]);
        assert_eq!(*ts.last().unwrap(), 19);
        assert_eq!(trailing_timesteps(1000, 3).unwrap(), vec![999, 666, 332]);
        // N = 16: 1000 − 3·62.5 = 812.5 rounds to even → 812 → t = 811.
        assert_eq!(trailing_timesteps(1000, 16).unwrap()[3], 811);
        assert_eq!(
            trailing_timesteps(1000, 1000).unwrap(),
            (0..1000).rev().collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let s = NoiseSchedule::linear(1000).unwrap();
        assert_eq!(
            SamplerPlan::ddim(&s, 0, 0.0, true).unwrap_err(),
            SamplerError::ZeroSteps
        );
        assert_eq!(
            SamplerPlan::ddim(&s, 10, 1.5, true).unwrap_err(),
            SamplerError::EtaOutOfRange(1.5)
        );
        assert_eq!(
            SamplerPlan::ddim(&s, 10, -0.1, true).unwrap_err(),
            SamplerError::EtaOutOfRange(-0.1)
        );
        assert!(matches!(
            SamplerPlan::ddim(&s, 1001, 0.0, true),
            Err(SamplerError::TooManySteps { .. })
        ));
    }

    #[test]
    fn sdedit_starts_exactly_at_the_noised_timestep() {
        // DDIM-10 (999, 899, …, 99) started at t = 590: 590 first, then 499, 399, …, 99. The first
        // step jumps from ᾱ_590 to ᾱ_499.
        let s = NoiseSchedule::linear(1000).unwrap();
        let d = SamplerPlan::ddim_from(&s, 10, 0.0, true, 590).unwrap();
        assert_eq!(d.timesteps(), &[590, 499, 399, 299, 199, 99]);
        let first = d.coefs(0);
        assert_eq!(
            (first.alpha_bar, first.alpha_bar_prev),
            (s.alpha_bar[590], s.alpha_bar[499])
        );
        // Starting on one of the sequence's own timesteps takes the usual steps from there.
        let d = SamplerPlan::ddim_from(&s, 10, 0.0, true, 499).unwrap();
        assert_eq!(d.timesteps(), &[499, 399, 299, 199, 99]);
        assert!(matches!(
            SamplerPlan::ddim_from(&s, 10, 0.0, true, 1000),
            Err(SamplerError::StartOutOfRange { .. })
        ));
    }

    #[test]
    fn eta_one_over_all_steps_is_ddpm_with_beta_tilde() {
        // Song et al. §4.1: with η = 1 and every timestep, σ_t² = β̃_t and the update equals the
        // DDPM posterior mean, coefficient for coefficient once x_t is written in x̂_0 and ε̂.
        let s = NoiseSchedule::linear(1000).unwrap();
        let ddim = SamplerPlan::ddim(&s, 1000, 1.0, false).unwrap();
        for index in [1usize, 400, 990] {
            let c = ddim.coefs(index);
            let t = c.t;
            assert!((c.sigma.powi(2) - s.posterior_variance[t]).abs() < 1e-12);
            // x_t = √ᾱ_t x̂_0 + √(1−ᾱ_t) ε̂, so DDPM's mean coef1·x̂_0 + coef2·x_t has
            // x̂_0 weight coef1 + coef2·√ᾱ_t and ε̂ weight coef2·√(1−ᾱ_t).
            let w_x0 = s.posterior_mean_coef1[t] + s.posterior_mean_coef2[t] * s.alpha_bar[t].sqrt();
            let w_eps = s.posterior_mean_coef2[t] * (1.0 - s.alpha_bar[t]).sqrt();
            assert!((c.c_x0 - w_x0).abs() < 1e-9, "t={t}");
            assert!((c.c_eps - w_eps).abs() < 1e-9, "t={t}");
        }
        let last = ddim.coefs(999);
        assert_eq!(
            (last.prev_t, last.alpha_bar_prev, last.sigma, last.c_eps),
            (None, 1.0, 0.0, 0.0)
        );
    }

    #[test]
    fn sigma_for_a_fractional_eta_is_song_et_al_eq_16_by_hand() {
        // Song et al. eq. 16: σ_t(η) = η √((1 − ᾱ_{t−1}) / (1 − ᾱ_t)) √(1 − ᾱ_t / ᾱ_{t−1}), with ᾱ
        // computed here as the product of (1 − β_i) over the linear βs. η = 0.5 on DDIM-50 (t = 999,
        // 979, …): an η² or √η slip gives 0.25× or 0.71× of it.
        let alpha_bar = |t: usize| -> f64 {
            (0..=t)
                .map(|i| 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0))
                .product()
        };
        let s = NoiseSchedule::linear(1000).unwrap();
        let plan = SamplerPlan::ddim(&s, 50, 0.5, true).unwrap();
        for index in [0usize, 10, 30, 48] {
            let (t, prev) = (plan.timesteps()[index], plan.timesteps()[index + 1]);
            let (a, a_prev) = (alpha_bar(t), alpha_bar(prev));
            let want = 0.5 * ((1.0 - a_prev) / (1.0 - a)).sqrt() * (1.0 - a / a_prev).sqrt();
            let got = plan.coefs(index).sigma;
            assert!((got - want).abs() < 1e-9 * want.max(1e-3), "t = {t}: σ {got} vs {want}");
        }
        // And σ is linear in η: half of η = 1's.
        let full = SamplerPlan::ddim(&s, 50, 1.0, true).unwrap();
        assert!((plan.coefs(10).sigma / full.coefs(10).sigma - 0.5).abs() < 1e-12);
    }
}
