//! The reverse chain against closed forms: lockstep; DDIM and DDPM with the exact ε-predictor of
//! Gaussian data (the variance each σ gives, by hand); SDEdit's first timestep; a step's ε̂; a step
//! taken in two halves.

use super::*;
use crate::diffusion::sampler::{SamplerPlan, VarianceKind};
use burn::tensor::TensorData;

#[test]
fn lockstep_keeps_chains_at_the_same_noise_level() {
    assert_eq!(lockstep(&[Some(999), Some(999)]), [true, true]);
    assert_eq!(lockstep(&[Some(998), Some(899)]), [true, false]);
    assert_eq!(lockstep(&[None, Some(5)]), [false, true]);
    assert_eq!(lockstep(&[None, None]), [false, false]);
    // DDPM (every t) beside DDIM-4 on T = 12 (timesteps 11, 8, 5, 2): twelve rounds; DDIM steps
    // in the rounds where DDPM is at its timesteps.
    let ddpm: Vec<usize> = (0..12).rev().collect();
    let ddim = [11usize, 8, 5, 2];
    let (mut i, mut j, mut ddim_rounds) = (0, 0, Vec::new());
    for round in 0.. {
        let go = lockstep(&[ddpm.get(i).copied(), ddim.get(j).copied()]);
        if go == [false, false] {
            assert_eq!(round, 12);
            break;
        }
        if go[1] {
            assert!(go[0], "DDIM never runs ahead of DDPM");
            ddim_rounds.push(ddpm[i]);
            j += 1;
        }
        i += usize::from(go[0]);
    }
    assert_eq!(ddim_rounds, ddim);
}

/// The exact ε-predictor for data x_0 ~ N(0, s² I): x_t ~ N(0, v_t), v_t = ᾱ_t s² + 1 − ᾱ_t,
/// and E[ε | x_t] = √(1 − ᾱ_t) x_t / v_t (Gaussian conditioning).
struct GaussianOracle {
    schedule: NoiseSchedule,
    s2: f64,
}

impl GaussianOracle {
    fn v(&self, alpha_bar: f64) -> f64 {
        alpha_bar * self.s2 + 1.0 - alpha_bar
    }
}

impl EpsModel for GaussianOracle {
    fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        let ab = self.schedule.alpha_bar[t[0]];
        assert!(t.iter().all(|&x| x == t[0]));
        x_t.mul_scalar((1.0 - ab).sqrt() / self.v(ab))
    }
}

/// With the exact predictor every DDIM (η = 0) step multiplies x_t by a scalar: x̂_0 =
/// √ᾱ_t s² x_t / v_t and ε̂ = √(1 − ᾱ_t) x_t / v_t, so x_prev = x_t (√ᾱ_p √ᾱ_t s² + √(1 − ᾱ_p)
/// √(1 − ᾱ_t)) / v_t (Song et al. eq. 12 with these plugged in), computed here in f64.
fn ddim_gain(schedule: &NoiseSchedule, timesteps: &[usize], s2: f64) -> f64 {
    let v = |a: f64| a * s2 + 1.0 - a;
    (0..timesteps.len())
        .map(|i| {
            let a = schedule.alpha_bar[timesteps[i]];
            let ap = timesteps.get(i + 1).map_or(1.0, |&p| schedule.alpha_bar[p]);
            (ap.sqrt() * a.sqrt() * s2 + (1.0 - ap).sqrt() * (1.0 - a).sqrt()) / v(a)
        })
        .product()
}

fn run_ddim(oracle: &GaussianOracle, steps: usize, shape: [usize; 4]) -> (Vec<f32>, Vec<f32>, Vec<usize>) {
    let sampler = SamplerPlan::ddim(&oracle.schedule, steps, 0.0, false).unwrap();
    let timesteps = sampler.timesteps().to_vec();
    let chain = ReverseChain::from_noise(oracle, sampler, shape, 11, &Device::flex());
    let x_t = chain.current().into_data().as_slice::<f32>().unwrap().to_vec();
    let x0 = chain.run().into_data().as_slice::<f32>().unwrap().to_vec();
    (x_t, x0, timesteps)
}

#[test]
fn deterministic_ddim_with_the_exact_predictor_transports_noise_to_data() {
    // For Gaussian data the probability-flow ODE is linear: x_0 = x_T · √(v_0 / v_T), with
    // v_0 = s² at the end of the chain (ᾱ = 1). DDIM (η = 0) is a first-order solver of that
    // ODE (Song et al. §4.3): with all 1000 steps it lands within 0.5 % of that answer
    // (the discretisation error; the f64 recursion below gives 0.49850 vs 0.50001).
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let oracle = GaussianOracle {
        schedule: schedule.clone(),
        s2: 0.25,
    };
    let exact = (0.25 / oracle.v(schedule.alpha_bar[999])).sqrt();
    let (x_t, x0, ts) = run_ddim(&oracle, 1000, [2, 1, 4, 4]);
    let gain = ddim_gain(&schedule, &ts, 0.25);
    for (a, b) in x_t.iter().zip(&x0) {
        let (a, b) = (*a as f64, *b as f64);
        assert!(
            (b - a * exact).abs() <= 5e-3 * (a * exact).abs() + 1e-6,
            "{b} vs ODE {}",
            a * exact
        );
        assert!(
            (b - a * gain).abs() <= 1e-4 * (a * gain).abs() + 1e-6,
            "{b} vs recursion {}",
            a * gain
        );
    }
    // 50 trailing steps: the tensor chain follows the scalar recursion to f32 precision.
    let (x_t, x0, ts) = run_ddim(&oracle, 50, [1, 1, 2, 2]);
    let gain = ddim_gain(&schedule, &ts, 0.25);
    for (a, b) in x_t.iter().zip(&x0) {
        let (a, b) = (*a as f64, *b as f64);
        assert!(
            (b - a * gain).abs() <= 1e-5 * (a * gain).abs() + 1e-6,
            "{b} vs {}",
            a * gain
        );
    }
}

/// The variance of x_0 that DDPM (Algorithm 2, unclipped) gives with the exact ε-predictor for
/// N(0, s²) data, by the scalar recursion written out here from the paper's formulas: with
/// ε̂ = √(1−ᾱ_t) x_t / v_t the step is linear, x_{t−1} = a_t x_t + σ_t z with
/// a_t = coef1 · √ᾱ_t s² / v_t + coef2 (eq. 7), so Var_{t−1} = a_t² Var_t + σ_t², Var_T = 1.
fn ddpm_variance_by_hand(s2: f64, sigma2: impl Fn(f64, f64, f64) -> f64) -> f64 {
    let beta = |i: usize| 1e-4 + (0.02 - 1e-4) * i as f64 / 999.0;
    let mut alpha_bar = vec![0.0; 1000];
    let mut acc = 1.0;
    for (i, a) in alpha_bar.iter_mut().enumerate() {
        acc *= 1.0 - beta(i);
        *a = acc;
    }
    let mut var = 1.0;
    for t in (0..1000).rev() {
        let (ab, ab_prev) = (alpha_bar[t], if t == 0 { 1.0 } else { alpha_bar[t - 1] });
        let v = ab * s2 + 1.0 - ab;
        let coef1 = beta(t) * ab_prev.sqrt() / (1.0 - ab);
        let coef2 = (1.0 - ab_prev) * (1.0 - beta(t)).sqrt() / (1.0 - ab);
        let a = coef1 * ab.sqrt() * s2 / v + coef2;
        let noise = if t == 0 { 0.0 } else { sigma2(beta(t), ab, ab_prev) };
        var = a * a * var + noise;
    }
    var
}

#[test]
fn ddpm_with_the_exact_predictor_samples_the_variance_each_sigma_gives() {
    // 102,400 pixels: the standard error of a variance estimate is V·√(2/n) ≈ 0.0011, a quarter
    // of the gap between what σ² = β̃ and σ² = β give (≈ 0.246 and ≈ 0.251 for s² = 0.25).
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let oracle = GaussianOracle {
        schedule: schedule.clone(),
        s2: 0.25,
    };
    let device = Device::flex();
    let expected_tilde = ddpm_variance_by_hand(0.25, |beta, ab, ab_prev| beta * (1.0 - ab_prev) / (1.0 - ab));
    let expected_beta = ddpm_variance_by_hand(0.25, |beta, _, _| beta);
    let n = 100 * 32 * 32;
    let se = 0.25 * (2.0 / n as f64).sqrt();
    assert!(
        (expected_beta - expected_tilde).abs() > 4.0 * se,
        "{expected_beta} vs {expected_tilde}"
    );
    for (variance, expected) in [
        (VarianceKind::BetaTilde, expected_tilde),
        (VarianceKind::Beta, expected_beta),
    ] {
        let sampler = SamplerPlan::ddpm(&schedule, variance, false);
        let x0 = ReverseChain::from_noise(&oracle, sampler, [100, 1, 32, 32], 1, &device).run();
        let v = x0
            .into_data()
            .as_slice::<f32>()
            .unwrap()
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(
            (v - expected).abs() < 4.0 * se,
            "{variance:?}: sample variance {v}, expected {expected} ± {se}"
        );
    }
}

#[test]
fn a_step_reports_the_models_noise_prediction() {
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let oracle = GaussianOracle {
        schedule: schedule.clone(),
        s2: 0.25,
    };
    let ddim = SamplerConfig::default().build(&schedule).unwrap();
    let mut chain = ReverseChain::from_noise(&oracle, ddim, [1, 1, 2, 2], 4, &Device::flex());
    let x_t = chain.current();
    let step = chain.step().unwrap();
    // ε̂ = √(1 − ᾱ) x_t / v for the oracle, at the first step's t = 999.
    let ab = schedule.alpha_bar[999];
    let want = x_t.mul_scalar((1.0 - ab).sqrt() / oracle.v(ab)).into_data();
    assert_eq!(
        step.eps.into_data().as_slice::<f32>().unwrap(),
        want.as_slice::<f32>().unwrap()
    );
}

#[test]
fn sdedit_starts_at_the_timestep_its_input_was_noised_to() {
    // The model's first t is the slider's t (590), not the sampler's nearest step below it
    // (499), and the chain's x_t is √ᾱ_590 x_0 + √(1 − ᾱ_590) ε for the ε given.
    let schedule = NoiseSchedule::linear(1000).unwrap();
    let oracle = GaussianOracle {
        schedule: schedule.clone(),
        s2: 1.0,
    };
    let device = Device::flex();
    let x0 = Tensor::<4>::from_data(TensorData::new(vec![0.5f32, -1.0, 0.0, 1.0], [1, 1, 2, 2]), &device);
    let eps = Tensor::<4>::from_data(TensorData::new(vec![1.0f32, 0.25, -2.0, 0.0], [1, 1, 2, 2]), &device);
    for config in [
        SamplerConfig::Ddim {
            steps: 10,
            eta: 0.0,
            clip_x0: true,
        },
        SamplerConfig::Ddpm {
            variance: VarianceKind::BetaTilde,
            clip_x0: true,
        },
    ] {
        let chain = ReverseChain::sdedit(&oracle, &config, &schedule, x0.clone(), 590, eps.clone(), 0).unwrap();
        assert_eq!(chain.next_coefs().unwrap().t, 590, "{config:?}");
        let (a, b) = (schedule.alpha_bar[590].sqrt(), (1.0 - schedule.alpha_bar[590]).sqrt());
        let expect = [0.5 * a + b, -a + 0.25 * b, -2.0 * b, a];
        let got = chain.current().into_data().as_slice::<f32>().unwrap().to_vec();
        for (g, e) in got.iter().zip(expect) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} vs {expect:?}");
        }
    }
    let config = SamplerConfig::Ddim {
        steps: 10,
        eta: 0.0,
        clip_x0: true,
    };
    assert!(ReverseChain::sdedit(&oracle, &config, &schedule, x0.clone(), 1000, eps, 0).is_err());
}

#[test]
fn a_step_taken_in_two_halves_is_the_same_step() {
    // The browser worker's path (model_input, ε̂ computed elsewhere, step_with) must take the
    // very steps of step(), the noise z of a stochastic sampler included.
    let schedule = NoiseSchedule::linear(50).unwrap();
    let oracle = GaussianOracle {
        schedule: schedule.clone(),
        s2: 0.25,
    };
    let plan = || SamplerPlan::ddpm(&schedule, VarianceKind::BetaTilde, false);
    let mut whole = ReverseChain::from_noise(&oracle, plan(), [2, 1, 3, 3], 5, &Device::flex());
    let mut halves = ReverseChain::from_noise(&oracle, plan(), [2, 1, 3, 3], 5, &Device::flex());
    let values = |t: Tensor<4>| t.into_data().as_slice::<f32>().unwrap().to_vec();
    for step in 0..50 {
        let (x_t, t) = halves.model_input().expect("steps left");
        assert_eq!(t, vec![49 - step; 2], "each image at the step's t");
        let b = halves.step_with(oracle.predict_eps(x_t, &t)).unwrap();
        let a = whole.step().unwrap();
        assert_eq!((a.index, a.coefs), (b.index, b.coefs));
        assert_eq!(values(a.x_prev), values(b.x_prev), "step {step}");
    }
    assert!(halves.model_input().is_none() && whole.step().is_none());
}
