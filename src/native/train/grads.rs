//! Gradient clipping by the global norm.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Rescales all gradients by min(1, `max_norm` / ‖g‖), ‖g‖ the L2 norm of every parameter's gradient
/// taken together (TensorFlow's `clip_by_global_norm`, which Ho et al. use; burn's own
/// `GradientClipping::Norm` clips each parameter on its own). Returns the gradients and ‖g‖ before
/// clipping, as a one-element tensor (read it back only when needed: it waits for the device), or
/// `None` when the module has no gradient at all.
pub fn clip_grad_global_norm<M: Module>(
    grads: GradientsParams,
    module: &M,
    max_norm: f64,
) -> (GradientsParams, Option<Tensor<1>>) {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: Option<Tensor<1>>,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s = g.square().sum(); // [1]
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    struct Scale {
        grads: GradientsParams,
        factor: Tensor<1>,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                let factor = self.factor.clone().reshape([1; D]); // [1, …, 1]
                self.grads.register(param.id, g * factor);
            }
        }
    }
    let mut sum = SumSquares {
        grads: &grads,
        total: None,
    };
    module.visit(&mut sum);
    let Some(total) = sum.total else {
        return (grads, None);
    };
    let norm = total.sqrt(); // [1]
    // min(1, c / (‖g‖ + ε)): the ε keeps an all-zero gradient finite.
    let factor = norm
        .clone()
        .add_scalar(1e-6)
        .recip()
        .mul_scalar(max_norm)
        .clamp_max(1.0); // [1]
    let mut scale = Scale { grads, factor };
    module.visit(&mut scale);
    (scale.grads, Some(norm))
}

#[cfg(test)]
mod tests {
    use super::super::test_layers::{linear, values};
    use super::*;
    use burn::optim::GradientsParams;
    use burn::tensor::Device;

    #[test]
    fn gradients_are_clipped_by_their_global_norm() {
        let device = Device::flex();
        let layer = linear(0.0, 0.0, &device);
        let grads_of = |wg: [f32; 2], bg: f32| {
            let mut g = GradientsParams::new();
            g.register(layer.weight.id, Tensor::<2>::from_data([[wg[0]], [wg[1]]], &device));
            g.register(layer.bias.as_ref().unwrap().id, Tensor::<1>::from_data([bg], &device));
            g
        };
        // ‖(3, 0, 4)‖ = 5: with c = 1 every gradient is scaled by 1/5 (clipping each parameter on
        // its own would give (1, 0) and 1 instead).
        let (mut g, norm) = clip_grad_global_norm(grads_of([3.0, 0.0], 4.0), &layer, 1.0);
        assert!((values(norm.unwrap())[0] - 5.0).abs() < 1e-6);
        let w = values(g.remove::<2>(layer.weight.id).unwrap());
        let b = values(g.remove::<1>(layer.bias.as_ref().unwrap().id).unwrap());
        assert!(
            (w[0] - 0.6).abs() < 1e-6 && w[1].abs() < 1e-7 && (b[0] - 0.8).abs() < 1e-6,
            "{w:?} {b:?}"
        );
        // Under the threshold nothing changes.
        let (mut g, _) = clip_grad_global_norm(grads_of([3.0, 0.0], 4.0), &layer, 10.0);
        assert_eq!(values(g.remove::<2>(layer.weight.id).unwrap()), vec![3.0, 0.0]);
    }
}
