//! Which images each photometric op touches, decided on the host from the
//! images' parameters (the loader thread knows them), as index lists and
//! values that travel to the device with the batch, in its one copy
//! (data/buffer.rs). Applying a plan then asks the host for nothing and
//! copies nothing: every op's indices and factors are slices of tensors
//! already on the device.
use super::{adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation, gaussian_blur, grayscale, kernel_size, permutation, solarize};
use super::{BLUR, BRIGHTNESS, CONTRAST, FLIP, GRAY, HUE, JITTER, NPARAMS, ORDER, SATURATION, SIGMA, SOLARIZE, SOLARIZE_THRESHOLD};
use anyhow::{bail, Context, Result};
use tch::Tensor;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Flip,
    /// Colour jitter's brightness (0), contrast (1), saturation (2) or hue (3).
    Jitter(usize),
    Gray,
    Blur,
    Solarize,
}

/// One op on a subset of the batch.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    op: Op,
    /// The subset: offset and length in the index lists; None for the whole batch.
    images: Option<(usize, usize)>,
    /// Offset of the subset's factors (jitter) or σ (blur) in the values.
    values: Option<usize>,
    len: usize,
}

/// One view's ops, in the reference's order: flip, colour jitter (each
/// image's four ops in its own order: four rounds, each op once a round),
/// grayscale, blur, solarisation. Ops that touch no image are left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    /// The plan of `n` images with `params` (n × NPARAMS), its index lists
    /// appended to `ints` and its values to `floats`.
    pub fn new(params: &[f32], n: usize, ints: &mut Vec<i64>, floats: &mut Vec<f32>) -> Result<Self> {
        if params.len() != n * NPARAMS {
            bail!("{} augmentation parameters for {n} images; expected {}", params.len(), n * NPARAMS);
        }
        let p = |i: usize, k: usize| params[i * NPARAMS + k];
        let on = |i: usize, k: usize| p(i, k) > 0.5;
        let mut plan = Plan::default();
        let mut add = |op: Op, pick: &dyn Fn(usize) -> bool, value: Option<usize>| {
            let picked: Vec<usize> = (0..n).filter(|&i| pick(i)).collect();
            if picked.is_empty() {
                return;
            }
            let images = (picked.len() < n).then(|| {
                ints.extend(picked.iter().map(|&i| i as i64));
                (ints.len() - picked.len(), picked.len())
            });
            let values = value.map(|column| {
                floats.extend(picked.iter().map(|&i| p(i, column)));
                floats.len() - picked.len()
            });
            plan.steps.push(Step { op, images, values, len: picked.len() });
        };
        add(Op::Flip, &|i| on(i, FLIP), None);
        for round in 0..4 {
            for (op, column) in [BRIGHTNESS, CONTRAST, SATURATION, HUE].into_iter().enumerate() {
                add(Op::Jitter(op), &|i| on(i, JITTER) && permutation(p(i, ORDER) as usize)[round] == op, Some(column));
            }
        }
        add(Op::Gray, &|i| on(i, GRAY), None);
        add(Op::Blur, &|i| on(i, BLUR), Some(SIGMA));
        add(Op::Solarize, &|i| on(i, SOLARIZE), None);
        Ok(plan)
    }

    /// uint8 views [B,3,H,W] on the device → float views in [0, 1] after
    /// the plan's ops; `ints` and `floats` are the plan's index lists and
    /// values on the same device. Each op runs on its images only
    /// (gathered with index_select, put back with index_copy).
    pub fn apply(&self, views: &Tensor, ints: &Tensor, floats: &Tensor) -> Result<Tensor> {
        let size = views.size4()?.2;
        let mut x = views.f_to_kind(tch::Kind::Float)?.f_div_scalar(255.0)?;
        for s in &self.steps {
            let values = s.values.map(|at| floats.f_narrow(0, at as i64, s.len as i64)).transpose()?;
            let values = || values.as_ref().context("a jitter or blur step without its values");
            let factors = || -> Result<Tensor> { Ok(values()?.f_view([-1, 1, 1, 1])?) };
            let run = |sub: &Tensor| -> Result<Tensor> {
                Ok(match s.op {
                    Op::Flip => sub.f_flip([3i64].as_slice())?,
                    Op::Jitter(0) => adjust_brightness(sub, &factors()?)?,
                    Op::Jitter(1) => adjust_contrast(sub, &factors()?)?,
                    Op::Jitter(2) => adjust_saturation(sub, &factors()?)?,
                    Op::Jitter(_) => adjust_hue(sub, values()?)?,
                    Op::Gray => grayscale(sub)?.f_expand([-1, 3, -1, -1], false)?,
                    Op::Blur => gaussian_blur(sub, values()?, kernel_size(size))?,
                    Op::Solarize => solarize(sub, SOLARIZE_THRESHOLD)?,
                })
            };
            x = match s.images {
                None => run(&x)?, // the whole batch: no gather or scatter
                Some((at, len)) => {
                    let idx = ints.f_narrow(0, at as i64, len as i64)?;
                    let out = run(&x.f_index_select(0, &idx)?)?;
                    x.f_index_copy(0, &idx, &out.f_contiguous()?)?
                }
            };
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_lists_each_ops_images_and_values() {
        let mut params = vec![0f32; 3 * NPARAMS];
        params[FLIP] = 1.0; // image 0 flipped
        for i in 0..3 {
            params[i * NPARAMS + BLUR] = 1.0; // all blurred: no index list
            params[i * NPARAMS + SIGMA] = 0.5 + i as f32;
        }
        params[2 * NPARAMS + JITTER] = 1.0; // image 2 jittered, in order 0 (b, c, s, h)
        params[2 * NPARAMS + BRIGHTNESS] = 1.25;
        let (mut ints, mut floats) = (vec![], vec![]);
        let plan = Plan::new(&params, 3, &mut ints, &mut floats).expect("plan");
        let ops: Vec<Op> = plan.steps.iter().map(|s| s.op).collect();
        assert_eq!(ops, [Op::Flip, Op::Jitter(0), Op::Jitter(1), Op::Jitter(2), Op::Jitter(3), Op::Blur]);
        assert_eq!(ints, [0, 2, 2, 2, 2]);
        assert_eq!(plan.steps[5].images, None);
        assert_eq!(floats[0], 1.25);
        assert_eq!(&floats[4..], [0.5, 1.5, 2.5]);
        assert!(Plan::new(&params[1..], 3, &mut ints, &mut floats).is_err());
    }

    #[test]
    fn a_plan_fits_the_room_a_batch_keeps_for_it() {
        let params = vec![1f32; 5 * NPARAMS]; // every op on every image, jitter in order 1
        let (mut ints, mut floats) = (vec![], vec![]);
        Plan::new(&params, 5, &mut ints, &mut floats).expect("plan");
        assert!(ints.is_empty() && floats.len() <= 5 * crate::data::buffer::PLAN_FLOATS);
        let mut half = params.clone();
        (0..5).step_by(2).for_each(|i| half[i * NPARAMS..(i + 1) * NPARAMS].fill(0.0));
        let (mut ints, mut floats) = (vec![], vec![]);
        Plan::new(&half, 5, &mut ints, &mut floats).expect("plan");
        assert!(ints.len() <= 5 * crate::data::buffer::PLAN_INTS && floats.len() <= 5 * crate::data::buffer::PLAN_FLOATS);
    }
}
