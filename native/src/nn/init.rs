//! Parameter initialisation from selfsup's own seeded generator.
//!
//! libtorch's global generator is process-wide (concurrent users disturb
//! each other), so initial weights are drawn in Rust from a ChaCha stream
//! keyed by the run's seed: the same seed gives the same weights on every
//! machine, thread and replica.
use anyhow::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Device, Kind, Tensor};

pub struct Init {
    rng: ChaCha8Rng,
    device: Device,
}

impl Init {
    pub fn new(seed: u64, device: Device) -> Self {
        Init { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5e1f_5e1f_0000_0001), device }
    }

    pub fn device(&self) -> Device {
        self.device
    }

    fn tensor(&self, values: Vec<f32>, dims: &[i64]) -> Result<Tensor> {
        Ok(Tensor::from_slice(&values).f_reshape(dims)?.f_to_device(self.device)?)
    }

    fn numel(dims: &[i64]) -> usize {
        dims.iter().product::<i64>() as usize
    }

    pub fn normal(&mut self, dims: &[i64], std: f64) -> Result<Tensor> {
        let v = (0..Self::numel(dims))
            .map(|_| (self.rng.sample::<f64, _>(StandardNormal) * std) as f32)
            .collect();
        self.tensor(v, dims)
    }

    pub fn uniform(&mut self, dims: &[i64], bound: f64) -> Result<Tensor> {
        let v = (0..Self::numel(dims)).map(|_| self.rng.random_range(-bound..bound) as f32).collect();
        self.tensor(v, dims)
    }

    pub fn constant(&self, dims: &[i64], value: f64) -> Result<Tensor> {
        Ok(Tensor::f_full(dims, value, (Kind::Float, self.device))?)
    }

    /// torchvision's ResNet conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
    pub fn kaiming_normal_fan_out(&mut self, dims: &[i64]) -> Result<Tensor> {
        let fan_out = dims[0] * dims.iter().skip(2).product::<i64>();
        self.normal(dims, (2.0 / fan_out as f64).sqrt())
    }
}

/// `--weight-initialization` schemes of the reference (helpers/layers.py
/// init_weights), with torch.nn.init's default arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scheme {
    XavierUniform,
    XavierNormal,
    Orthogonal,
    KaimingNormal,
    KaimingUniform,
}

pub const SCHEMES: &str = "xavier_uniform, xavier_normal, orthogonal, kaiming_normal, kaiming_uniform";

impl Scheme {
    pub fn parse(name: &str) -> anyhow::Result<Scheme> {
        Ok(match name {
            "xavier_uniform" => Scheme::XavierUniform,
            "xavier_normal" => Scheme::XavierNormal,
            "orthogonal" => Scheme::Orthogonal,
            "kaiming_normal" => Scheme::KaimingNormal,
            "kaiming_uniform" => Scheme::KaimingUniform,
            _ => anyhow::bail!("unknown --weight-initialization {name:?}; choose one of {SCHEMES}"),
        })
    }
}

impl Init {
    /// New values for a conv/linear weight under `scheme`.
    pub fn scheme(&mut self, scheme: Scheme, dims: &[i64]) -> Result<Tensor> {
        let receptive: i64 = dims.iter().skip(2).product();
        let (fan_in, fan_out) = ((dims[1] * receptive) as f64, (dims[0] * receptive) as f64);
        // kaiming_* default: a = 0, mode fan_in, leaky_relu → gain √2
        match scheme {
            Scheme::XavierUniform => self.uniform(dims, (6.0 / (fan_in + fan_out)).sqrt()),
            Scheme::XavierNormal => self.normal(dims, (2.0 / (fan_in + fan_out)).sqrt()),
            Scheme::KaimingNormal => self.normal(dims, (2.0 / fan_in).sqrt()),
            Scheme::KaimingUniform => self.uniform(dims, (6.0 / fan_in).sqrt()),
            Scheme::Orthogonal => {
                // torch.nn.init.orthogonal_: QR of a normal matrix, signs fixed by diag(R).
                let (rows, cols) = (dims[0], dims.iter().skip(1).product::<i64>());
                let mut a = self.normal(&[rows, cols], 1.0)?.f_to_device(Device::Cpu)?;
                if rows < cols {
                    a = a.f_transpose(0, 1)?;
                }
                let (mut q, r) = Tensor::f_linalg_qr(&a, "reduced")?;
                q = q.f_mul(&r.f_diagonal(0, 0, 1)?.f_sign()?)?;
                if rows < cols {
                    q = q.f_transpose(0, 1)?;
                }
                Ok(q.f_contiguous()?.f_reshape(dims)?.f_to_device(self.device)?)
            }
        }
    }
}
