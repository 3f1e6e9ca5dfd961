//! A batch's bytes for the device, in one host buffer: the views' uint8
//! images, then the labels and augmentation plans' index lists (int64),
//! then the plans' values (float32). One buffer means one host→device
//! copy per batch, however many ops the augmentations run.
//!
//! When training on CUDA the buffer is page-locked ("pinned") memory from
//! libtorch's caching host allocator, written in place by the loader
//! thread (no staging copy), so the copy to the device is asynchronous
//! (what `DataLoader(pin_memory=True)` does, without its pin-memory
//! thread). The allocator reuses a freed block once the copies that read
//! it are done, so batches cycle through a few blocks, not fresh
//! allocations.
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

pub struct HostBatch {
    /// uint8, CPU, pinned or not.
    t: Tensor,
    pinned: bool,
    /// Images per view there is room for.
    cap: usize,
    size: u32,
    views: usize,
    /// Byte offset and element count of the int64 and float32 sections.
    ints: (usize, usize),
    floats: (usize, usize),
}

/// A batch's tensors on the device: views of the one copied buffer.
pub struct DeviceBatch {
    /// uint8 [n, 3, size, size] per view.
    pub images: Vec<Tensor>,
    /// int64 [n].
    pub labels: Tensor,
    /// The int64 section, labels first, then the plans' index lists (a
    /// plan's offsets count from its start), and the plans' values.
    pub ints: Tensor,
    pub floats: Tensor,
}

/// Most int64 and float32 values per image and view the augmentation plans
/// can hold (augment/plan.rs: an image is in at most 8 index lists and
/// brings at most 5 values), plus one int64 for its label.
pub const PLAN_INTS: usize = 8;
pub const PLAN_FLOATS: usize = 5;

fn plane(size: u32) -> usize {
    3 * (size as usize) * (size as usize)
}

impl HostBatch {
    /// Room for `cap` images of `size` px in each of `views` views, their
    /// labels and plans; pinned when `pin` (needs CUDA).
    pub fn new(cap: usize, size: u32, views: usize, pin: bool) -> Result<Self> {
        let images = views * cap * plane(size);
        let ints = (images.next_multiple_of(8), 0);
        let bytes = ints.0 + 8 * cap * (1 + PLAN_INTS * views) + 4 * cap * PLAN_FLOATS * views;
        let t = if pin { crate::pipeline::cuda::pinned_empty(bytes)? } else { Tensor::f_empty([bytes as i64], (Kind::Uint8, Device::Cpu))? };
        Ok(HostBatch { t, pinned: pin, cap, size, views, ints, floats: (ints.0, 0) })
    }

    fn all(&self) -> &[u8] {
        // SAFETY: a contiguous uint8 CPU tensor owned by self; the slice borrows self.
        unsafe { std::slice::from_raw_parts(self.t.data_ptr() as *const u8, self.t.numel()) }
    }

    fn all_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `all`; `&mut self` makes the borrow exclusive (the tensor is not shared before `bytes`).
        unsafe { std::slice::from_raw_parts_mut(self.t.data_ptr() as *mut u8, self.t.numel()) }
    }

    /// Image `i` of view `v`, to be written.
    pub fn image_mut(&mut self, v: usize, i: usize) -> &mut [u8] {
        let (p, at) = (plane(self.size), (v * self.cap + i) * plane(self.size));
        &mut self.all_mut()[at..at + p]
    }

    /// The first `n` images of view `v`, CHW each.
    pub fn view(&self, v: usize, n: usize) -> &[u8] {
        let at = v * self.cap * plane(self.size);
        &self.all()[at..at + n * plane(self.size)]
    }

    pub fn views(&self) -> usize {
        self.views
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// Writes the labels and plan index lists (`ints`) and the plan values (`floats`).
    pub fn write_data(&mut self, ints: &[i64], floats: &[f32]) -> Result<()> {
        let at_f = self.ints.0 + 8 * ints.len();
        if at_f + 4 * floats.len() > self.t.numel() {
            bail!("a batch's plan holds {} + {} values, more than its buffer has room for", ints.len(), floats.len());
        }
        let start = self.ints.0;
        let buf = self.all_mut();
        for (k, v) in ints.iter().enumerate() {
            buf[start + 8 * k..start + 8 * k + 8].copy_from_slice(&v.to_ne_bytes());
        }
        for (k, v) in floats.iter().enumerate() {
            buf[at_f + 4 * k..at_f + 4 * k + 4].copy_from_slice(&v.to_ne_bytes());
        }
        self.ints.1 = ints.len();
        self.floats = (at_f, floats.len());
        Ok(())
    }

    /// The bytes in use, as one uint8 tensor sharing the buffer.
    pub fn bytes(&self) -> Result<Tensor> {
        Ok(self.t.f_narrow(0, 0, (self.floats.0 + 4 * self.floats.1) as i64)?)
    }

    /// `bytes` (the buffer or its copy on a device) as the batch's tensors, for `n` images.
    pub fn split(&self, bytes: &Tensor, n: usize) -> Result<DeviceBatch> {
        if n > self.cap || self.ints.1 < n {
            bail!("a batch of {n} images, with room for {} and {} labels", self.cap, self.ints.1);
        }
        let (p, s) = (plane(self.size), self.size as i64);
        let images = (0..self.views)
            .map(|v| Ok(bytes.f_narrow(0, (v * self.cap * p) as i64, (n * p) as i64)?.f_view([n as i64, 3, s, s])?))
            .collect::<Result<_>>()?;
        let section = |(at, len): (usize, usize), width: usize, kind: Kind| -> Result<Tensor> {
            Ok(bytes.f_narrow(0, at as i64, (width * len) as i64)?.f_view_dtype(kind)?)
        };
        let ints = section(self.ints, 8, Kind::Int64)?;
        Ok(DeviceBatch {
            labels: ints.f_narrow(0, 0, n as i64)?,
            ints,
            floats: section(self.floats, 4, Kind::Float)?,
            images,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(pin: bool) -> HostBatch {
        let mut b = HostBatch::new(3, 4, 2, pin).expect("buffer");
        for v in 0..2 {
            for i in 0..3 {
                b.image_mut(v, i).iter_mut().enumerate().for_each(|(k, x)| *x = (v * 100 + i * 10 + k) as u8);
            }
        }
        b.write_data(&[7, 8, 9, 1, 2], &[0.5, -1.25]).expect("data");
        b
    }

    #[test]
    fn images_labels_and_plans_come_out_of_one_buffer() {
        let b = filled(false);
        let t = b.split(&b.bytes().expect("bytes"), 3).expect("split");
        assert_eq!(t.images.len(), 2);
        assert_eq!(t.images[1].size(), [3, 3, 4, 4]);
        assert_eq!(Vec::<u8>::try_from(t.images[1].flatten(0, -1)).expect("vec"), b.view(1, 3).to_vec());
        assert_eq!(b.view(1, 3)[48], 110);
        assert_eq!(Vec::<i64>::try_from(&t.labels).expect("labels"), [7, 8, 9]);
        assert_eq!(Vec::<i64>::try_from(&t.ints).expect("ints"), [7, 8, 9, 1, 2]);
        assert_eq!(Vec::<f32>::try_from(&t.floats).expect("floats"), [0.5, -1.25]);
        // A test batch whose last image was unreadable: two of three.
        let t = b.split(&b.bytes().expect("bytes"), 2).expect("split");
        assert_eq!(t.images[0].size(), [2, 3, 4, 4]);
        assert_eq!(Vec::<i64>::try_from(&t.labels).expect("labels"), [7, 8]);
        assert!(b.split(&b.bytes().expect("bytes"), 4).is_err());
    }

    #[test]
    fn a_plan_larger_than_its_room_is_refused() {
        let mut b = HostBatch::new(1, 2, 1, false).expect("buffer");
        assert!(b.write_data(&[0; 9], &[0.0; 5]).is_ok()); // label + 8 index entries, 5 values: what a plan can need
        assert!(b.write_data(&[0; 20], &[]).is_err());
    }

    #[test]
    #[ignore = "needs a GPU; run where libtorch sees one (scripts/test-all.sh does)"]
    fn pinned_batches_reach_the_gpu_unchanged() {
        assert!(tch::Cuda::is_available(), "pinned memory needs a GPU that libtorch sees");
        let b = filled(true);
        assert!(b.is_pinned());
        let dev = b.bytes().expect("bytes").to_device_(Device::Cuda(0), Kind::Uint8, true, false);
        let t = b.split(&dev, 3).expect("split");
        drop(b); // the caching host allocator keeps the block until the copy is done
        assert_eq!(Vec::<i64>::try_from(t.labels.to_device(Device::Cpu)).expect("labels"), [7, 8, 9]);
        assert_eq!(Vec::<f32>::try_from(t.floats.to_device(Device::Cpu)).expect("floats"), [0.5, -1.25]);
    }
}
