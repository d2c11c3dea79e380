//! The divergence rule: when a run's loss or gradients say it has gone bad.

use super::TrainError;

/// The divergence rule: an ε-predictor that outputs zeros scores E‖ε‖²/d = 1 under L_simple (and
/// at most 1 under Min-SNR, whose weights are ≤ 1), and a healthy run stays below that after its
/// first steps. A loss above [`Self::THRESHOLD`] (ten times the untrained score) for
/// [`Self::PATIENCE`] steps in a row is a diverged run; a non-finite loss or gradient norm stops it
/// at once.
#[derive(Debug, Default)]
pub struct DivergenceWatch {
    above: usize,
}

impl DivergenceWatch {
    /// Loss above which a step counts towards divergence.
    pub const THRESHOLD: f64 = 10.0;
    /// Steps in a row above the threshold that make a run diverged.
    pub const PATIENCE: usize = 50;

    /// Checks step `step`'s loss.
    pub fn check_loss(&mut self, step: usize, loss: f64) -> Result<(), TrainError> {
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                step,
                cause: format!("the loss is {loss}"),
            });
        }
        self.above = if loss > Self::THRESHOLD { self.above + 1 } else { 0 };
        if self.above >= Self::PATIENCE {
            return Err(TrainError::Diverged {
                step,
                cause: format!(
                    "the loss diverged: above {} (ten times an untrained model's ≈ 1) for {} steps in a row, now {loss:.3e}",
                    Self::THRESHOLD,
                    Self::PATIENCE
                ),
            });
        }
        Ok(())
    }

    /// Checks step `step`'s gradient norm (before clipping).
    pub fn check_grad_norm(&self, step: usize, norm: f64) -> Result<(), TrainError> {
        if norm.is_finite() {
            Ok(())
        } else {
            Err(TrainError::Diverged {
                step,
                cause: format!("the gradient norm is {norm}"),
            })
        }
    }

    /// Whether the latest loss was below the threshold.
    pub fn healthy(&self) -> bool {
        self.above == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divergence_is_a_non_finite_value_or_fifty_steps_above_ten() {
        let mut watch = DivergenceWatch::default();
        assert!(watch.check_loss(1, 1.0).is_ok());
        for step in 2..51 {
            assert!(watch.check_loss(step, 11.0).is_ok(), "step {step}");
        }
        assert!(!watch.healthy());
        // The 50th step in a row above 10 stops the run; a step at or below 10 resets the count.
        let err = watch.check_loss(51, 8.7e24).unwrap_err().to_string();
        assert!(err.contains("step 51") && err.contains("diverged"), "{err}");
        let mut watch = DivergenceWatch::default();
        for step in 1..50 {
            watch.check_loss(step, 11.0).unwrap();
        }
        watch.check_loss(50, 10.0).unwrap();
        assert!(watch.healthy());
        watch.check_loss(51, 11.0).unwrap();
        for bad in [f64::NAN, f64::INFINITY] {
            let err = DivergenceWatch::default().check_loss(7, bad).unwrap_err().to_string();
            assert!(err.contains("step 7") && err.contains("the loss is"), "{err}");
            let err = watch.check_grad_norm(8, bad).unwrap_err().to_string();
            assert!(err.contains("step 8") && err.contains("gradient norm"), "{err}");
        }
    }
}
