//! Helpers shared by the native tests and the browser tests.
#![allow(dead_code)]

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use ddpm_explorer::model::{UNet, UNetConfig};
use ddpm_explorer::rng::NoiseRng;

/// The small U-Net of the tests: channels 8/16, one ResBlock per level.
pub fn tiny_unet_config() -> UNetConfig {
    UNetConfig::new()
        .with_base_channels(8)
        .with_channel_mult(vec![1, 2])
        .with_res_blocks(1)
}

/// `unet` with N(0, 0.05²) noise from `seed` added to every parameter, so that the layers that
/// start at zero are live too.
pub fn perturbed(unet: UNet, seed: u64) -> UNet {
    struct Jitter(NoiseRng);
    impl ModuleMapper for Jitter {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let rng = &mut self.0;
            param.map(|t| {
                let shape = t.shape();
                let n = shape.num_elements();
                let noise = Tensor::<1>::from_data(TensorData::new(rng.normal_vec(n), [n]), &t.device());
                t + noise.reshape(shape).mul_scalar(0.05)
            })
        }
    }
    unet.map(&mut Jitter(NoiseRng::new(seed)))
}
