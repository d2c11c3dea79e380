//! The exponential moving average of the weights (what a run exports and the app ships).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::HashMap;

/// Collects a module's trained float parameters, flattened, by id (without autodiff). A frozen
/// parameter (one that takes no gradient) is left out: its EMA stays exactly its value, where
/// d·x + (1 − d)·x would round it by an ulp now and then.
struct ParamCollector(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for ParamCollector {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        if t.is_autodiff() && !t.is_require_grad() {
            return;
        }
        let t = t.without_autodiff();
        let n = t.shape().num_elements();
        self.0.insert(param.id, t.reshape([n]));
    }
}

/// ema ← decay · ema + (1 − decay) · current, parameter by parameter.
struct EmaUpdate {
    current: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for EmaUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|ema| {
            let shape = ema.shape();
            ema.mul_scalar(decay) + current.reshape(shape).mul_scalar(1.0 - decay)
        })
    }
}

/// Updates the EMA copy towards `model`, with the usual warm-up of the decay:
/// min(decay, (1 + step)/(10 + step)).
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64, step: usize) -> M {
    let mut collector = ParamCollector(HashMap::new());
    model.visit(&mut collector);
    let decay = decay.min((1.0 + step as f64) / (10.0 + step as f64));
    ema.map(&mut EmaUpdate {
        current: collector.0,
        decay,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_layers::{linear, values};
    use super::*;
    use burn::nn::Linear;
    use burn::tensor::Device;

    /// `model` with every parameter set to `v`, keeping the parameter ids (which the EMA matches on).
    fn filled(model: &Linear, v: f32) -> Linear {
        let mut copy = model.clone();
        copy.weight = copy.weight.map(|w| w.ones_like().mul_scalar(v));
        copy.bias = copy.bias.map(|b| b.map(|b| b.ones_like().mul_scalar(v)));
        copy
    }

    #[test]
    fn ema_follows_the_warm_up_formula() {
        let device = Device::flex();
        let model = linear(3.0, -1.0, &device);
        // Step 0: decay = min(0.999, 1/10) = 0.1, so 0.1·1 + 0.9·3 = 2.8 and 0.1·1 + 0.9·(−1) = −0.8.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 0);
        assert!(values(ema.weight.val()).iter().all(|v| (v - 2.8).abs() < 1e-6));
        assert!((values(ema.bias.unwrap().val())[0] + 0.8).abs() < 1e-6);
        // Step 1000: decay = min(0.999, 1001/1010), so (1001·1 + 9·3)/1010 = 1028/1010.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 1000);
        assert!(
            values(ema.weight.val())
                .iter()
                .all(|v| (v - 1028.0 / 1010.0).abs() < 1e-6)
        );
        // Late in training the configured decay wins: 0.999·1 + 0.001·3 = 1.002.
        let ema = ema_update(filled(&model, 1.0), &model, 0.999, 1_000_000);
        assert!(values(ema.weight.val()).iter().all(|v| (v - 1.002).abs() < 1e-6));
    }
}
