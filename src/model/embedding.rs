//! The sinusoidal timestep embedding (Vaswani et al. 2017, as used by Ho et al. 2020) and the MLP
//! that lifts it to the embedding every residual block receives.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};

/// `[sin(t·f_0), …, sin(t·f_{h−1}), cos(t·f_0), …, cos(t·f_{h−1})]` with h = dim/2 and
/// f_i = 10000^{−i/(h−1)}, exactly as DDPM's `get_timestep_embedding` (sin and cos concatenated).
/// Computed on the host: the timesteps are host numbers anyway, so no trigonometry runs on the GPU.
///
/// # Panics
/// If `dim` is odd or smaller than 4.
pub fn timestep_embedding(t: &[usize], dim: usize) -> Vec<f32> {
    assert!(
        dim >= 4 && dim.is_multiple_of(2),
        "timestep embedding dimension must be even and ≥ 4, got {dim}"
    );
    let half = dim / 2;
    let scale = (10000f64).ln() / (half - 1) as f64;
    let mut out = Vec::with_capacity(t.len() * dim);
    for &t in t {
        let args: Vec<f64> = (0..half).map(|i| t as f64 * (-scale * i as f64).exp()).collect();
        out.extend(args.iter().map(|a| a.sin() as f32));
        out.extend(args.iter().map(|a| a.cos() as f32));
    }
    out
}

/// Configuration of [`TimeEmbedding`].
#[derive(Config, Debug)]
pub struct TimeEmbeddingConfig {
    /// Size of the sinusoidal embedding.
    pub sinusoid_dim: usize,
    /// Size of the output embedding.
    pub embed_dim: usize,
}

/// Sinusoid → Linear → SiLU → Linear.
#[derive(Module, Debug)]
pub struct TimeEmbedding {
    linear_in: Linear,
    linear_out: Linear,
    sinusoid_dim: usize,
}

impl TimeEmbeddingConfig {
    /// Initialises the MLP on `device`.
    pub fn init(&self, device: &Device) -> TimeEmbedding {
        TimeEmbedding {
            linear_in: LinearConfig::new(self.sinusoid_dim, self.embed_dim).init(device),
            linear_out: LinearConfig::new(self.embed_dim, self.embed_dim).init(device),
            sinusoid_dim: self.sinusoid_dim,
        }
    }
}

impl TimeEmbedding {
    /// Size of the output embedding.
    pub fn embed_dim(&self) -> usize {
        self.linear_out.weight.dims()[1]
    }

    /// Embeds a batch of timesteps.
    ///
    /// # Shapes
    /// - `t`: `batch` timesteps
    /// - output: `[batch, embed_dim]`
    pub fn forward(&self, t: &[usize], device: &Device) -> Tensor<2> {
        let sinusoid = TensorData::new(timestep_embedding(t, self.sinusoid_dim), [t.len(), self.sinusoid_dim]);
        let x = Tensor::<2>::from_data(sinusoid, device); // [batch, sinusoid_dim]
        let x = silu(self.linear_in.forward(x)); // [batch, embed_dim]
        self.linear_out.forward(x) // [batch, embed_dim]
    }
}

/// Configuration of [`ClassEmbedding`].
#[derive(Config, Debug)]
pub struct ClassEmbeddingConfig {
    /// Number of real classes (the table has one more row: "no class").
    pub num_classes: usize,
    /// Size of the embedding (the time embedding's).
    pub embed_dim: usize,
    /// Start from zeros, so the class adds nothing until trained (a model made conditional from
    /// unconditional weights starts as that model); otherwise N(0, 1) as burn's default.
    #[config(default = false)]
    pub zero_init: bool,
}

/// A learned vector per class, scaled by [`CLASS_EMBEDDING_GAIN`] and added to the timestep
/// embedding (Ho & Salimans 2022 train one network for both, dropping the label with probability
/// p_uncond). "No class" (∅) adds nothing: the unconditional model is the network given no class
/// vector, exactly, so a model made conditional from unconditional weights keeps that model as its
/// ∅ path, and training cannot move ∅ away from it through the table. (The table keeps a last row
/// for ∅, as the format has it; it is never read and gets no gradient.)
#[derive(Module, Debug)]
pub struct ClassEmbedding {
    table: Embedding,
}

/// The class embedding is `CLASS_EMBEDDING_GAIN · table[c]`, its table initialised at N(0, 1/gain²)
/// (so the vectors start as N(0, 1), burn's default) or at zero. Under Adam every entry of the
/// table moves by about the learning rate per step whatever its gradient's size, so the gain is a
/// learning-rate multiplier for the class vectors alone: measured on the digits, a table started at
/// zero reached row norms of only 0.2 in 1,800 steps at lr 3e-4–8e-4 (the time embedding's norm is
/// about 2), too little for the network to tell the classes apart.
pub const CLASS_EMBEDDING_GAIN: f64 = 10.0;

impl ClassEmbeddingConfig {
    /// Initialises the table on `device`.
    pub fn init(&self, device: &Device) -> ClassEmbedding {
        let mut config =
            EmbeddingConfig::new(self.num_classes + 1, self.embed_dim).with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 1.0 / CLASS_EMBEDDING_GAIN,
            });
        if self.zero_init {
            config = config.with_initializer(Initializer::Zeros);
        }
        ClassEmbedding {
            table: config.init(device),
        }
    }
}

impl ClassEmbedding {
    /// Number of real classes (rows − 1).
    pub fn num_classes(&self) -> usize {
        self.table.weight.dims()[0] - 1
    }

    /// The row index of each image's class, ∅ being the last row.
    ///
    /// # Panics
    /// If a class is not below [`Self::num_classes`].
    pub fn rows(&self, classes: &[Option<usize>]) -> Vec<i64> {
        let n = self.num_classes();
        classes
            .iter()
            .map(|c| match *c {
                Some(c) if c < n => c as i64,
                Some(c) => panic!("class {c} is out of range for a model with {n} classes"),
                None => n as i64,
            })
            .collect()
    }

    /// Embeds a batch of classes (`None`: no class).
    ///
    /// # Shapes
    /// - `classes`: `batch` entries
    /// - output: `[batch, embed_dim]`
    pub fn forward(&self, classes: &[Option<usize>], device: &Device) -> Tensor<2> {
        let b = classes.len();
        let rows = Tensor::<2, Int>::from_data(TensorData::new(self.rows(classes), [b, 1]), device); // [b, 1]
        // The gain for a class, zero for ∅ (whose row then gets no gradient either).
        let gain: Vec<f32> = classes
            .iter()
            .map(|c| if c.is_some() { CLASS_EMBEDDING_GAIN as f32 } else { 0.0 })
            .collect();
        let gain = Tensor::<3>::from_data(TensorData::new(gain, [b, 1, 1]), device); // [b, 1, 1]
        let e = self.table.forward(rows) * gain; // [b, 1, embed_dim]
        let d = e.dims()[2];
        e.reshape([b, d]) // [b, embed_dim]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    /// Whatever the table's last row holds, ∅ adds exactly nothing and gets no gradient; a class
    /// adds gain · its row.
    #[test]
    fn no_class_adds_nothing_and_learns_nothing() {
        let device = Device::flex().autodiff();
        let mut embedding = ClassEmbeddingConfig::new(2, 3).init(&device);
        let table = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], &device);
        embedding.table.weight = Param::from_tensor(table.require_grad());
        let e = embedding.forward(&[Some(1), None], &device); // [2, 3]
        let values = e.clone().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(values, [40.0, 50.0, 60.0, 0.0, 0.0, 0.0]);
        let grads = e.sum().backward();
        let grad = embedding
            .table
            .weight
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(grad, [0.0, 0.0, 0.0, 10.0, 10.0, 10.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn embedding_matches_ddpm_by_hand() {
        // dim 4 → h = 2, f = [1, 1e-4]: t = 0 gives [0, 0, 1, 1]; t = 10 gives
        // [sin 10, sin 1e-3, cos 10, cos 1e-3].
        let e = timestep_embedding(&[0, 10], 4);
        assert_eq!(&e[..4], &[0.0, 0.0, 1.0, 1.0]);
        let want = [10f64.sin(), 1e-3f64.sin(), 10f64.cos(), 1e-3f64.cos()];
        for (g, w) in e[4..].iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-6);
        }
    }
}
