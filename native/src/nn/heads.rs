//! The MLP heads of the methods, named as the reference's nn.Sequential
//! (indices 0, 1, 3, 4): Linear(in→hidden) · BatchNorm1d · ReLU ·
//! Linear(hidden→out) [· BatchNorm1d].
//!
//! - SimCLR's projection head ends with a BatchNorm1d (affine);
//! - BYOL's projector and predictor end with the Linear;
//! - MoCo v3's (the authors' `_build_mlp` with two layers) have no biases;
//!   its projector ends with a BatchNorm1d(affine=False), its predictor
//!   with the Linear.
use super::init::Init;
use super::layers::{relu, BatchNorm, Linear};
use anyhow::{Context, Result};
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

    /// Linears without bias; `last_bn`: a final BatchNorm1d(affine=False).
    pub fn bias_free(p: &Path, init: &mut Init, input: i64, hidden: i64, output: i64, last_bn: bool) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::with_bias(&(p / "0"), init, input, hidden, false)?,
            bn1: BatchNorm::new(&(p / "1"), init, hidden)?,
            fc2: Linear::with_bias(&(p / "3"), init, hidden, output, false)?,
            bn2: if last_bn { Some(BatchNorm::without_affine(&(p / "4"), init, output)?) } else { None },
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

/// The deeper projector of Barlow Twins (the authors' `projector`) and
/// VICReg (its "expander"): (Linear · BatchNorm1d · ReLU) for each hidden
/// width, then a Linear without bias, named as their nn.Sequential
/// (indices 0, 1, 3, 4, 6, …). `hidden_bias`: the hidden Linears have a
/// bias (VICReg) or not (Barlow Twins).
pub struct Projector {
    hidden: Vec<(Linear, BatchNorm)>,
    last: Linear,
}

impl Projector {
    /// `sizes` are the widths after the input: `[8192, 8192, 8192]` for
    /// the papers' 8192-8192-8192.
    pub fn new(p: &Path, init: &mut Init, input: i64, sizes: &[i64], hidden_bias: bool) -> Result<Self> {
        let (&out, hidden) = sizes.split_last().context("a projector needs at least one layer")?;
        let mut layers = Vec::new();
        let mut width = input;
        for (i, &h) in hidden.iter().enumerate() {
            let fc = Linear::with_bias(&(p / (3 * i)), init, width, h, hidden_bias)?;
            layers.push((fc, BatchNorm::new(&(p / (3 * i + 1)), init, h)?));
            width = h;
        }
        let last = Linear::with_bias(&(p / (3 * hidden.len())), init, width, out, false)?;
        Ok(Projector { hidden: layers, last })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.shallow_clone();
        for (fc, bn) in &self.hidden {
            y = relu(&bn.forward(&fc.forward(&y)?, train)?)?;
        }
        self.last.forward(&y)
    }
}

/// Widths from a projector spec as the authors' flags write it,
/// `8192-8192-8192`; `flag` names it in the error.
pub fn parse_sizes(spec: &str, flag: &str) -> Result<Vec<i64>> {
    let sizes: Vec<i64> = spec.split('-').map(|s| s.trim().parse::<i64>()).collect::<Result<_, _>>().ok().unwrap_or_default();
    if sizes.is_empty() || sizes.iter().any(|&s| s < 1) {
        anyhow::bail!("{flag} {spec:?} is not a list of widths such as 8192-8192-8192");
    }
    Ok(sizes)
}
