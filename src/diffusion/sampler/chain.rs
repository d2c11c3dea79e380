//! The reverse chain x_T → x_0, one step at a time, so a caller can draw as it goes.

use super::{SamplerConfig, SamplerError, SamplerPlan, StepCoefs};
use crate::diffusion::forward::q_sample;
use crate::diffusion::schedule::NoiseSchedule;
use crate::rng::NoiseRng;
use burn::tensor::{Device, Tensor};

/// Anything that predicts the noise ε̂(x_t, t): the U-Net, or an analytic oracle in tests.
pub trait EpsModel {
    /// ε̂ for a batch, each image at its own timestep.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, channels, height, width]`, `t`: `batch` timesteps
    /// - output: `[batch, channels, height, width]`
    fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4>;
}

/// A borrowed ε-predictor predicts as its owner does.
impl<M: EpsModel + ?Sized> EpsModel for &M {
    fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        (**self).predict_eps(x_t, t)
    }
}

/// One finished reverse step.
#[derive(Clone, Debug)]
pub struct ChainStep {
    /// Step number within the sampler's sequence (0 is the first step).
    pub index: usize,
    /// The coefficients used.
    pub coefs: StepCoefs,
    /// x_{t−1}, `[batch, channels, height, width]`.
    pub x_prev: Tensor<4>,
    /// x̂_0 at this step, `[batch, channels, height, width]`.
    pub pred_x0: Tensor<4>,
    /// The model's ε̂(x_t, t) at this step, `[batch, channels, height, width]`.
    pub eps: Tensor<4>,
}

/// A running reverse chain. Noise (x_T and every z) comes from a seeded [`NoiseRng`] on the host,
/// so the same seed gives the same chain on every backend.
pub struct ReverseChain<'m, M: EpsModel> {
    model: &'m M,
    sampler: SamplerPlan,
    x_t: Tensor<4>,
    next_index: usize,
    rng: NoiseRng,
    shape: [usize; 4],
    device: Device,
}

impl<'m, M: EpsModel> ReverseChain<'m, M> {
    /// A chain starting from pure noise x_T ~ N(0, I) of `shape` `[batch, channels, h, w]`.
    pub fn from_noise(model: &'m M, sampler: SamplerPlan, shape: [usize; 4], seed: u64, device: &Device) -> Self {
        let mut rng = NoiseRng::new(seed);
        let x_t = rng.normal_tensor(shape, device);
        Self {
            model,
            sampler,
            x_t,
            next_index: 0,
            rng,
            shape,
            device: device.clone(),
        }
    }

    /// A chain starting from a given latent x_T (e.g. an interpolation of two seeds' noise); `seed`
    /// drives the z's of stochastic samplers.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, channels, height, width]`
    pub fn from_latent(model: &'m M, sampler: SamplerPlan, x_t: Tensor<4>, seed: u64) -> Self {
        let shape = x_t.dims();
        let device = x_t.device();
        Self {
            model,
            sampler,
            x_t,
            next_index: 0,
            rng: NoiseRng::new(seed),
            shape,
            device,
        }
    }

    /// SDEdit (Meng et al. 2022): `x0` noised to `start_t` with `noise` by q(x_t | x_0) (Ho et al.
    /// eq. 4), then denoised by `sampler` from there. The first step denoises `start_t` itself, and
    /// [`Self::current`] is exactly √ᾱ x_0 + √(1−ᾱ) ε for the given ε; `seed` drives the z's.
    ///
    /// # Shapes
    /// - `x0`, `noise`: `[batch, channels, height, width]`
    pub fn sdedit(
        model: &'m M,
        sampler: &SamplerConfig,
        schedule: &NoiseSchedule,
        x0: Tensor<4>,
        start_t: usize,
        noise: Tensor<4>,
        seed: u64,
    ) -> Result<Self, SamplerError> {
        let sampler = sampler.build_starting_at(schedule, start_t)?;
        let shape = x0.dims();
        let x_t = q_sample(schedule, x0, &vec![start_t; shape[0]], noise); // [b, c, h, w]
        Ok(Self::from_latent(model, sampler, x_t, seed))
    }

    /// The current sample (x_T before the first step, x_0 after the last).
    pub fn current(&self) -> Tensor<4> {
        self.x_t.clone()
    }

    /// How many steps the whole sequence has, and how many are done.
    pub fn progress(&self) -> (usize, usize) {
        (self.next_index, self.sampler.timesteps().len())
    }

    /// The coefficients of the step [`Self::step`] will take next, if any.
    pub fn next_coefs(&self) -> Option<StepCoefs> {
        (self.next_index < self.sampler.timesteps().len()).then(|| self.sampler.coefs(self.next_index))
    }

    /// Takes one reverse step; `None` once x_0 is reached. Reads nothing back from the device.
    pub fn step(&mut self) -> Option<ChainStep> {
        let (x_t, t) = self.model_input()?;
        let eps = self.model.predict_eps(x_t, &t); // [b, c, h, w]
        self.step_with(eps)
    }

    /// What the model is asked next: x_t and each image's t (`None` once x_0 is reached). With
    /// [`Self::step_with`] this is [`Self::step`] in two halves, for a caller whose ε̂ comes from
    /// elsewhere (the browser's Web Worker, which runs the U-Net off the page's thread).
    ///
    /// # Shapes
    /// - x_t: `[batch, channels, height, width]`
    pub fn model_input(&self) -> Option<(Tensor<4>, Vec<usize>)> {
        let coefs = self.next_coefs()?;
        Some((self.x_t.clone(), vec![coefs.t; self.shape[0]]))
    }

    /// Takes the next reverse step with `eps`, the model's ε̂ for [`Self::model_input`]; `None`
    /// once x_0 is reached.
    ///
    /// # Shapes
    /// - `eps`: `[batch, channels, height, width]`
    pub fn step_with(&mut self, eps: Tensor<4>) -> Option<ChainStep> {
        let coefs = self.next_coefs()?;
        let noise = (coefs.sigma > 0.0).then(|| self.rng.normal_tensor(self.shape, &self.device));
        let out = self.sampler.step(self.next_index, self.x_t.clone(), eps.clone(), noise);
        self.x_t = out.prev_sample.clone();
        let index = self.next_index;
        self.next_index += 1;
        Some(ChainStep {
            index,
            coefs,
            x_prev: out.prev_sample,
            pred_x0: out.pred_x0,
            eps,
        })
    }

    /// Runs every remaining step and returns x_0.
    pub fn run(mut self) -> Tensor<4> {
        while self.step().is_some() {}
        self.x_t
    }
}

/// Which of several chains take their next step, so that chains shown side by side stay at the
/// same noise level: those whose next timestep is the largest (DDPM-1000 beside DDIM-10 steps ten
/// times for each DDIM step, and both step together at DDIM's timesteps). `next_t[i]` is chain i's
/// next timestep, `None` once it has finished.
pub fn lockstep(next_t: &[Option<usize>]) -> Vec<bool> {
    let highest = next_t.iter().flatten().max();
    next_t.iter().map(|t| t.is_some() && t.as_ref() == highest).collect()
}

#[cfg(test)]
mod tests {
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
}
