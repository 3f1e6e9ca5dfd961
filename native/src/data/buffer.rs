//! Host memory for a batch's uint8 images: a plain vector, or page-locked
//! ("pinned") memory when training on CUDA, so the host→device copy can
//! run asynchronously (what `DataLoader(pin_memory=True)` does).
use anyhow::{bail, Result};
use std::ops::Deref;
use tch::{Device, Kind, Tensor};

pub enum HostImages {
    Plain(Vec<u8>),
    /// A contiguous uint8 CPU tensor [n, 3, s, s] in pinned memory.
    Pinned(Tensor),
}

impl HostImages {
    /// Copies `bytes` (n × 3 × size × size, CHW per image) into pinned memory. Called on the
    /// loader threads, so the copy (the pin-memory thread's job in PyTorch) costs the trainer
    /// nothing. Only valid when CUDA is available; the caller checks.
    pub fn pinned(bytes: &[u8], n: usize, size: u32) -> Result<Self> {
        let shape = shape(n, size);
        check_len(bytes.len(), &shape)?;
        // SAFETY: `bytes` outlives the borrowed tensor, which is only read by pin_memory's copy.
        let borrowed = unsafe { Tensor::f_from_blob(bytes.as_ptr(), &shape, &[], Kind::Uint8, Device::Cpu)? };
        Ok(HostImages::Pinned(borrowed.f_pin_memory(Device::Cuda(0))?))
    }

    /// The images as a uint8 tensor [n, 3, size, size] on `device`. From pinned memory the copy
    /// is non-blocking: libtorch's caching host allocator keeps the block alive until the copy
    /// has finished, even if this batch is dropped first.
    pub fn to_device(&self, n: usize, size: u32, device: Device) -> Result<Tensor> {
        let shape = shape(n, size);
        check_len(self.len(), &shape)?;
        Ok(match self {
            HostImages::Plain(bytes) => Tensor::from_slice(bytes).f_view(shape.as_slice())?.f_to_device(device)?,
            HostImages::Pinned(t) if device == Device::Cpu => t.shallow_clone(),
            HostImages::Pinned(t) => t.f_to_device_(device, Kind::Uint8, true, false)?,
        })
    }
}

impl Deref for HostImages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            HostImages::Plain(bytes) => bytes,
            HostImages::Pinned(t) => {
                let len = t.numel();
                if len == 0 {
                    return &[];
                }
                // SAFETY: a contiguous uint8 CPU tensor owned by self; the slice borrows self.
                unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, len) }
            }
        }
    }
}

fn shape(n: usize, size: u32) -> [i64; 4] {
    [n as i64, 3, size as i64, size as i64]
}

fn check_len(len: usize, shape: &[i64; 4]) -> Result<()> {
    let want: i64 = shape.iter().product();
    if len as i64 != want {
        bail!("batch holds {len} image bytes, expected {want} for {shape:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_images_reach_the_device_unchanged() {
        let bytes: Vec<u8> = (0..2 * 3 * 4 * 4).map(|i| i as u8).collect();
        let images = HostImages::Plain(bytes.clone());
        let t = images.to_device(2, 4, Device::Cpu).expect("to device");
        assert_eq!(t.size(), [2, 3, 4, 4]);
        assert_eq!(Vec::<u8>::try_from(t.flatten(0, -1)).expect("vec"), bytes);
        assert_eq!(&images[..], &bytes[..]);
        assert!(images.to_device(3, 4, Device::Cpu).is_err());
    }

    #[test]
    #[ignore = "needs a GPU; run where libtorch sees one (scripts/test-all.sh does)"]
    fn pinned_images_when_cuda_is_present() {
        assert!(tch::Cuda::is_available(), "pinned memory needs a GPU that libtorch sees");
        let bytes: Vec<u8> = (0..3 * 8 * 8).map(|i| (i * 7) as u8).collect();
        let images = HostImages::pinned(&bytes, 1, 8).expect("pin");
        assert_eq!(&images[..], &bytes[..]);
        let t = images.to_device(1, 8, Device::Cuda(0)).expect("to cuda");
        drop(images); // the caching host allocator must keep the block until the copy is done
        assert_eq!(Vec::<u8>::try_from(t.to_device(Device::Cpu).flatten(0, -1)).expect("vec"), bytes);
    }
}
