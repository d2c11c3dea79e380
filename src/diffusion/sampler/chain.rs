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
#[path = "chain_tests.rs"]
mod tests;
