//! The MLP heads of both methods, named as the reference's nn.Sequential
//! (indices 0, 1, 3, 4): Linear(in→hidden) · BatchNorm1d · ReLU ·
//! Linear(hidden→out) [· BatchNorm1d].
//!
//! - SimCLR's projection head ends with a BatchNorm1d (affine);
//! - BYOL's projector and predictor end with the Linear.
use super::init::Init;
use super::layers::{relu, BatchNorm, Linear};
use anyhow::Result;
use tch::{nn::Path, Tensor};

pub struct Mlp {
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    bn2: Option<BatchNorm>,
}

impl Mlp {
    pub fn new(p: &Path, init: &mut Init, input: i64, hidden: i64, output: i64, final_bn: bool) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::new(&(p / "0"), init, input, hidden)?,
            bn1: BatchNorm::new(&(p / "1"), init, hidden)?,
            fc2: Linear::new(&(p / "3"), init, hidden, output)?,
            bn2: if final_bn { Some(BatchNorm::new(&(p / "4"), init, output)?) } else { None },
        })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = relu(&self.bn1.forward(&self.fc1.forward(x)?, train)?)?;
        let y = self.fc2.forward(&y)?;
        match &self.bn2 {
            Some(bn) => bn.forward(&y, train),
            None => Ok(y),
        }
    }
}
