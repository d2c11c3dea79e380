//! Classifier-free guidance (Ho & Salimans 2022): one network trained both with and without the
//! class (the label dropped to "no class", ∅, with probability p_uncond) is asked twice per step,
//! and the two answers are extrapolated away from the unconditional one:
//!
//! ```text
//! ε̃_θ(x_t, c) = (1 + w) ε_θ(x_t, c) − w ε_θ(x_t, ∅)          (Ho & Salimans eq. 6)
//! ```
//!
//! w = 0 is the conditional model itself (one forward pass); larger w trades diversity for
//! samples that look more like their class. The two passes run as one batch of twice the size.
//! [`Guided`] is an [`EpsModel`], so every sampler and chain (DDPM, DDIM, SDEdit, the latent walk)
//! runs guided without knowing it.

use super::SamplerError;
use super::chain::EpsModel;
use burn::tensor::Tensor;

/// The largest guidance scale accepted: far past where samples saturate (Ho & Salimans show
/// w ≤ 4; the explorer's slider stops at 5).
pub const MAX_GUIDANCE: f64 = 20.0;

/// An ε-predictor that can be told each image's class (`None`: ∅, no class).
pub trait ConditionalEpsModel {
    /// The number of classes (`None`: an unconditional model, which cannot be guided).
    fn num_classes(&self) -> Option<usize>;

    /// ε̂ for a batch, each image at its own timestep and with its own class.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, channels, height, width]`; `t`, `classes`: `batch` entries each
    /// - output: `[batch, channels, height, width]`
    fn predict_eps_given(&self, x_t: Tensor<4>, t: &[usize], classes: &[Option<usize>]) -> Tensor<4>;
}

/// What guidance asks of a batch, apart from the model: a class per image and the scale w. It
/// says what the network is to be given ([`Self::inputs`]) and how its answer becomes ε̃
/// ([`Self::combine`]), so a caller whose network runs elsewhere (the browser's Web Worker) guides
/// exactly as [`Guided`] does.
#[derive(Clone, Debug, PartialEq)]
pub struct Guidance {
    /// One class per image (`None`: no class).
    pub classes: Vec<Option<usize>>,
    /// w.
    pub scale: f64,
}

impl Guidance {
    /// Whether a step needs the unconditional pass too (w > 0 and some image has a class).
    pub fn needs_two_passes(&self) -> bool {
        self.scale > 0.0 && self.classes.iter().any(Option::is_some)
    }

    /// The network's input for x_t at timesteps t: the batch as it is with its classes, or (two
    /// passes) the batch twice, first with its classes and then with ∅.
    ///
    /// # Shapes
    /// - `x_t`: `[batch, channels, height, width]`
    /// - output: `[batch or 2·batch, channels, height, width]`, with as many timesteps and classes
    pub fn inputs(&self, x_t: Tensor<4>, t: &[usize]) -> (Tensor<4>, Vec<usize>, Vec<Option<usize>>) {
        assert_eq!(t.len(), self.classes.len(), "one class per image");
        if !self.needs_two_passes() {
            return (x_t, t.to_vec(), self.classes.clone());
        }
        let b = t.len();
        let x2 = Tensor::cat(vec![x_t.clone(), x_t], 0); // [2b, c, h, w]
        let classes2 = self
            .classes
            .iter()
            .copied()
            .chain(std::iter::repeat_n(None, b))
            .collect();
        (x2, [t, t].concat(), classes2)
    }

    /// ε̃ from the network's answer to [`Self::inputs`].
    ///
    /// # Shapes
    /// - `eps`: `[batch or 2·batch, channels, height, width]`
    /// - output: `[batch, channels, height, width]`
    pub fn combine(&self, eps: Tensor<4>) -> Tensor<4> {
        if !self.needs_two_passes() {
            return eps;
        }
        let b = self.classes.len();
        let [_, c, h, w] = eps.dims();
        let eps_cond = eps.clone().slice([0..b, 0..c, 0..h, 0..w]); // [b, c, h, w]
        let eps_uncond = eps.slice([b..2 * b, 0..c, 0..h, 0..w]); // [b, c, h, w]
        guide(eps_cond, eps_uncond, self.scale) // [b, c, h, w]
    }
}

/// A conditional model guided towards one class per image with scale w.
#[derive(Clone, Debug)]
pub struct Guided<'m, M> {
    model: &'m M,
    guidance: Guidance,
}

impl<'m, M: ConditionalEpsModel> Guided<'m, M> {
    /// `model` asked for `classes[i]` for image i (`None`: no class, the unconditional model),
    /// guided with scale `scale` = w.
    ///
    /// # Errors
    /// If a class is asked of an unconditional model, a class is out of range, or w is outside
    /// [0, [`MAX_GUIDANCE`]].
    pub fn new(model: &'m M, classes: Vec<Option<usize>>, scale: f64) -> Result<Self, SamplerError> {
        let guidance = Guidance { classes, scale };
        check_guidance(&guidance, model.num_classes())?;
        Ok(Self { model, guidance })
    }

    /// What is asked: the classes and w.
    pub fn guidance(&self) -> &Guidance {
        &self.guidance
    }
}

/// Checks `guidance` against a model with `num_classes` classes (`None`: unconditional).
///
/// # Errors
/// If a class is asked of an unconditional model, a class is out of range, or w is outside
/// [0, [`MAX_GUIDANCE`]].
pub fn check_guidance(guidance: &Guidance, num_classes: Option<usize>) -> Result<(), SamplerError> {
    if !(0.0..=MAX_GUIDANCE).contains(&guidance.scale) {
        return Err(SamplerError::GuidanceOutOfRange(guidance.scale));
    }
    match (num_classes, guidance.classes.iter().flatten().max()) {
        (None, Some(_)) => Err(SamplerError::NotConditional),
        (Some(n), Some(&c)) if c >= n => Err(SamplerError::ClassOutOfRange { class: c, classes: n }),
        _ => Ok(()),
    }
}

/// (1 + w) ε_c − w ε_∅, elementwise.
///
/// # Shapes
/// - `eps_cond`, `eps_uncond`, output: `[batch, channels, height, width]`
pub fn guide(eps_cond: Tensor<4>, eps_uncond: Tensor<4>, scale: f64) -> Tensor<4> {
    eps_cond.mul_scalar(1.0 + scale) - eps_uncond.mul_scalar(scale) // [b, c, h, w]
}

impl<M: ConditionalEpsModel> EpsModel for Guided<'_, M> {
    fn predict_eps(&self, x_t: Tensor<4>, t: &[usize]) -> Tensor<4> {
        // Both passes in one batch: the images with their classes, then the same images with ∅.
        let (x, t, classes) = self.guidance.inputs(x_t, t); // [b or 2b, c, h, w]
        let eps = self.model.predict_eps_given(x, &t, &classes); // [b or 2b, c, h, w]
        self.guidance.combine(eps) // [b, c, h, w]
    }
}

/// Parses a class given by index ("3") or by name ("sneaker", case-insensitive) against a
/// model's class names.
pub fn parse_class(text: &str, names: &[String]) -> Result<usize, SamplerError> {
    let text = text.trim();
    if let Ok(i) = text.parse::<usize>()
        && i < names.len()
    {
        return Ok(i);
    }
    names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(text))
        .ok_or_else(|| SamplerError::UnknownClass {
            name: text.to_string(),
            names: names.join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    /// A toy conditional ε model, by hand: ε(x, t, c) = x · (c + 1) for a class c, and x · 0.5
    /// for ∅ (t is ignored); 3 classes.
    #[derive(Debug)]
    struct Toy;

    impl ConditionalEpsModel for Toy {
        fn num_classes(&self) -> Option<usize> {
            Some(3)
        }
        fn predict_eps_given(&self, x_t: Tensor<4>, t: &[usize], classes: &[Option<usize>]) -> Tensor<4> {
            let [b, c, h, w] = x_t.dims();
            assert_eq!(t.len(), b);
            let factors: Vec<f32> = classes
                .iter()
                .flat_map(|k| {
                    let f = k.map_or(0.5, |k| k as f32 + 1.0);
                    std::iter::repeat_n(f, c * h * w)
                })
                .collect();
            x_t * Tensor::<4>::from_data(TensorData::new(factors, [b, c, h, w]), &Device::flex())
        }
    }

    /// Counts the forward passes and the images in them.
    struct Counting<'a>(&'a Toy, std::cell::RefCell<Vec<usize>>);

    impl ConditionalEpsModel for Counting<'_> {
        fn num_classes(&self) -> Option<usize> {
            self.0.num_classes()
        }
        fn predict_eps_given(&self, x_t: Tensor<4>, t: &[usize], classes: &[Option<usize>]) -> Tensor<4> {
            self.1.borrow_mut().push(t.len());
            self.0.predict_eps_given(x_t, t, classes)
        }
    }

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().as_slice::<f32>().unwrap().to_vec()
    }

    fn x() -> Tensor<4> {
        Tensor::from_data(TensorData::new(vec![1.0f32, -2.0, 4.0], [3, 1, 1, 1]), &Device::flex())
    }

    #[test]
    fn guidance_is_ho_and_salimans_extrapolation_by_hand() {
        // w = 2, images x = 1, −2, 4 asked for classes 0, 2 and ∅:
        // image 0: ε_c = 1·1 = 1, ε_∅ = 0.5 → 3·1 − 2·0.5 = 2;
        // image 1: ε_c = −2·3 = −6, ε_∅ = −1 → 3·(−6) − 2·(−1) = −16;
        // image 2: ∅ → 3·2 − 2·2 = 2 (∅ guided is ∅).
        let counting = Counting(&Toy, Default::default());
        let guided = Guided::new(&counting, vec![Some(0), Some(2), None], 2.0).unwrap();
        assert_eq!(values(guided.predict_eps(x(), &[5, 5, 5])), [2.0, -16.0, 2.0]);
        // Both passes went through the model as one batch of 6.
        assert_eq!(*counting.1.borrow(), [6]);
    }

    #[test]
    fn w_zero_is_the_conditional_model_in_one_pass() {
        let counting = Counting(&Toy, Default::default());
        let guided = Guided::new(&counting, vec![Some(1), Some(0), Some(2)], 0.0).unwrap();
        // ε_c = x·(c + 1): 1·2, −2·1, 4·3.
        assert_eq!(values(guided.predict_eps(x(), &[9, 9, 9])), [2.0, -2.0, 12.0]);
        assert_eq!(*counting.1.borrow(), [3]);
    }

    #[test]
    fn no_class_is_the_unconditional_model_whatever_w() {
        for w in [0.0, 1.0, 5.0] {
            let guided = Guided::new(&Toy, vec![None; 3], w).unwrap();
            assert_eq!(values(guided.predict_eps(x(), &[1, 1, 1])), [0.5, -1.0, 2.0]);
        }
    }

    #[test]
    fn batching_changes_nothing() {
        // The batched guided answer equals the two passes computed apart and combined by hand.
        let classes = vec![Some(2), Some(1), Some(0)];
        let guided = Guided::new(&Toy, classes.clone(), 1.5).unwrap();
        let batched = values(guided.predict_eps(x(), &[3, 3, 3]));
        let cond = values(Toy.predict_eps_given(x(), &[3, 3, 3], &classes));
        let uncond = values(Toy.predict_eps_given(x(), &[3, 3, 3], &[None; 3]));
        for i in 0..3 {
            let want = 2.5 * cond[i] - 1.5 * uncond[i];
            assert!((batched[i] - want).abs() < 1e-6, "image {i}: {} vs {want}", batched[i]);
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert_eq!(
            Guided::new(&Toy, vec![Some(3)], 1.0).unwrap_err(),
            SamplerError::ClassOutOfRange { class: 3, classes: 3 }
        );
        assert_eq!(
            Guided::new(&Toy, vec![Some(0)], -1.0).unwrap_err(),
            SamplerError::GuidanceOutOfRange(-1.0)
        );
        assert!(Guided::new(&Toy, vec![Some(0)], f64::NAN).is_err());
        assert!(Guided::new(&Toy, vec![Some(0)], 21.0).is_err());
    }

    #[test]
    fn classes_parse_by_index_or_name() {
        let names: Vec<String> = ["T-shirt/top", "Trouser", "Sneaker"].map(String::from).to_vec();
        assert_eq!(parse_class("2", &names), Ok(2));
        assert_eq!(parse_class("sneaker", &names), Ok(2));
        assert_eq!(parse_class(" Trouser ", &names), Ok(1));
        assert!(parse_class("3", &names).is_err());
        assert!(parse_class("boot", &names).is_err());
    }
}
