//! torchvision's ResNets without `fc`, written out so that parameter and
//! buffer names (`conv1.weight`, `layer1.0.bn2.running_var`,
//! `layer2.0.downsample.0.weight`, …), shapes and default initialisation
//! match `torchvision.models.resnet*` (v1.5: the stride sits on the 3x3
//! conv of a bottleneck). `small_stem` swaps the 7x7/2 conv and max-pool
//! for a 3x3/1 conv, the usual choice for 32-pixel images. `base_width`
//! (64 in torchvision) scales every channel count, stem included, for
//! narrower networks on small machines; the names stay the same.
use super::init::Init;
use super::layers::{relu, BatchNorm, Conv2d};
use anyhow::{bail, Result};
use tch::{nn::Path, Tensor};

/// Every `--arch` selfsup builds.
pub const ARCHS: [&str; 6] = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2"];

struct Spec {
    bottleneck: bool,
    blocks: [i64; 4],
    width_per_group: i64,
}

fn spec(arch: &str) -> Result<Spec> {
    let (bottleneck, blocks, width_per_group) = match arch {
        "resnet18" => (false, [2, 2, 2, 2], 64),
        "resnet34" => (false, [3, 4, 6, 3], 64),
        "resnet50" => (true, [3, 4, 6, 3], 64),
        "resnet101" => (true, [3, 4, 23, 3], 64),
        "resnet152" => (true, [3, 8, 36, 3], 64),
        "wide_resnet50_2" => (true, [3, 4, 6, 3], 128),
        _ => bail!("unknown --arch {arch:?}; choose one of {}", ARCHS.join(", ")),
    };
    Ok(Spec { bottleneck, blocks, width_per_group })
}

/// Width of the pooled features an architecture produces.
pub fn feature_size(arch: &str) -> Result<i64> {
    feature_size_width(arch, 64)
}

/// Width of the pooled features with the channel counts scaled to `base_width`.
pub fn feature_size_width(arch: &str, base_width: i64) -> Result<i64> {
    Ok(if spec(arch)?.bottleneck { 32 * base_width } else { 8 * base_width })
}

struct Block {
    convs: Vec<Conv2d>,
    bns: Vec<BatchNorm>,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Block {
    fn new(p: &Path, init: &mut Init, s: &Spec, cin: i64, planes: i64, stride: i64) -> Result<(Self, i64)> {
        let expansion = if s.bottleneck { 4 } else { 1 };
        let cout = planes * expansion;
        // (in, out, kernel, stride, padding) of each conv in the block.
        let shapes = if s.bottleneck {
            let width = planes * s.width_per_group / 64;
            vec![(cin, width, 1, 1, 0), (width, width, 3, stride, 1), (width, cout, 1, 1, 0)]
        } else {
            vec![(cin, planes, 3, stride, 1), (planes, planes, 3, 1, 1)]
        };
        let mut convs = Vec::new();
        let mut bns = Vec::new();
        for (i, &(a, b, k, st, pad)) in shapes.iter().enumerate() {
            convs.push(Conv2d::new(&(p / format!("conv{}", i + 1)), init, a, b, k, st, pad)?);
            bns.push(BatchNorm::new(&(p / format!("bn{}", i + 1)), init, b)?);
        }
        let downsample = if stride != 1 || cin != cout {
            let d = p / "downsample";
            Some((Conv2d::new(&(&d / "0"), init, cin, cout, 1, stride, 0)?, BatchNorm::new(&(&d / "1"), init, cout)?))
        } else {
            None
        };
        Ok((Block { convs, bns, downsample }, cout))
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.shallow_clone();
        let last = self.convs.len() - 1;
        for (i, (conv, bn)) in self.convs.iter().zip(&self.bns).enumerate() {
            y = bn.forward(&conv.forward(&y)?, train)?;
            if i != last {
                y = relu(&y)?;
            }
        }
        let identity = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x)?, train)?,
            None => x.shallow_clone(),
        };
        relu(&(y + identity))
    }
}

/// A torchvision ResNet backbone, `fc` removed: images in, pooled features out.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    small_stem: bool,
    layers: Vec<Block>,
    pub features: i64,
}

impl ResNet {
    pub fn new(p: &Path, init: &mut Init, arch: &str, small_stem: bool) -> Result<Self> {
        Self::with_width(p, init, arch, small_stem, 64)
    }

    /// A ResNet whose stem has `w` channels and whose stages have w, 2w, 4w, 8w planes.
    pub fn with_width(p: &Path, init: &mut Init, arch: &str, small_stem: bool, w: i64) -> Result<Self> {
        let s = spec(arch)?;
        if !(1..=1024).contains(&w) {
            bail!("--base-width must be between 1 and 1024, got {w}");
        }
        let conv1 = if small_stem {
            Conv2d::new(&(p / "conv1"), init, 3, w, 3, 1, 1)?
        } else {
            Conv2d::new(&(p / "conv1"), init, 3, w, 7, 2, 3)?
        };
        let bn1 = BatchNorm::new(&(p / "bn1"), init, w)?;
        let mut layers = Vec::new();
        let mut cin = w;
        for (li, (&n, planes)) in s.blocks.iter().zip([w, 2 * w, 4 * w, 8 * w]).enumerate() {
            let lp = p / format!("layer{}", li + 1);
            for bi in 0..n {
                let stride = if bi == 0 && li > 0 { 2 } else { 1 };
                let (block, cout) = Block::new(&(&lp / bi.to_string()), init, &s, cin, planes, stride)?;
                layers.push(block);
                cin = cout;
            }
        }
        Ok(ResNet { conv1, bn1, small_stem, layers, features: cin })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = relu(&self.bn1.forward(&self.conv1.forward(x)?, train)?)?;
        if !self.small_stem {
            y = y.f_max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)?;
            crate::amp::trace("maxpool", &y);
        }
        for block in &self.layers {
            y = block.forward(&y, train)?;
        }
        let y = y.f_adaptive_avg_pool2d([1, 1])?;
        crate::amp::trace("avgpool", &y);
        Ok(y.f_flatten(1, -1)?)
    }
}
