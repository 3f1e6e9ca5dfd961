//! Projection heads and the online linear classifier.
use super::init::Init;
use super::layers::{BatchNorm, Linear};
use anyhow::Result;
use tch::{nn::Path, Tensor};

/// SimCLR's projection head as the reference programs build it
/// (`nn.Sequential` indices kept for the names):
/// Linear(in→hidden) · BatchNorm1d · ReLU · Linear(hidden→out) · BatchNorm1d.
pub struct SimClrHead {
    fc1: Linear,
    bn1: BatchNorm,
    fc2: Linear,
    bn2: BatchNorm,
}

impl SimClrHead {
    pub fn new(p: &Path, init: &mut Init, input: i64, hidden: i64, output: i64) -> Result<Self> {
        Ok(SimClrHead {
            fc1: Linear::new(&(p / "0"), init, input, hidden)?,
            bn1: BatchNorm::new(&(p / "1"), init, hidden)?,
            fc2: Linear::new(&(p / "3"), init, hidden, output)?,
            bn2: BatchNorm::new(&(p / "4"), init, output)?,
        })
    }

    pub fn forward(&self, h: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward(&self.fc1.forward(h)?, train)?.f_relu()?;
        self.bn2.forward(&self.fc2.forward(&y)?, train)
    }
}
