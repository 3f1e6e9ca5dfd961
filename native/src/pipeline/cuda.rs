//! CUDA streams, events and pinned memory through the shim
//! (shim/pipeline.cpp), which reaches them through c10's device-generic
//! interfaces. Nothing here runs without a GPU: the callers take these
//! paths only for a CUDA trainer or a loader feeding one.
use crate::shim::shim;
use anyhow::Result;
use std::ffi::{c_char, c_int, c_void};
use tch::{Device, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn selfsup_pinned_empty(nbytes: i64, out: *mut *mut C_tensor, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_stream_current(device: c_int, id: *mut i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_stream_from_pool(device: c_int, id: *mut i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_stream_exchange(device: c_int, id: i64, prev: *mut i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_record_stream(t: *const C_tensor, device: c_int, id: i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_event_new(out: *mut *mut c_void, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_event_free(ev: *mut c_void);
    fn selfsup_event_record(ev: *mut c_void, device: c_int, id: i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_event_block(ev: *mut c_void, device: c_int, id: i64, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_event_synchronize(ev: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_event_elapsed_ms(start: *mut c_void, end: *mut c_void, ms: *mut f64, err: *mut c_char, cap: usize) -> c_int;
}

/// An empty uint8 CPU tensor of `nbytes` in page-locked memory (libtorch's
/// caching host allocator). Needs CUDA.
pub fn pinned_empty(nbytes: usize) -> Result<Tensor> {
    let mut out = std::ptr::null_mut();
    shim(|err, cap| unsafe { selfsup_pinned_empty(nbytes as i64, &mut out, err, cap) })?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// A CUDA stream: its device index and c10 stream id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    device: c_int,
    id: i64,
}

impl Stream {
    /// The calling thread's current stream on `device`.
    pub fn current(device: usize) -> Result<Self> {
        let mut id = 0;
        shim(|err, cap| unsafe { selfsup_stream_current(device as c_int, &mut id, err, cap) })?;
        Ok(Stream { device: device as c_int, id })
    }

    /// A stream from libtorch's pool, beside the current one.
    pub fn from_pool(device: usize) -> Result<Self> {
        let mut id = 0;
        shim(|err, cap| unsafe { selfsup_stream_from_pool(device as c_int, &mut id, err, cap) })?;
        Ok(Stream { device: device as c_int, id })
    }

    /// Makes this the thread's current stream until the guard drops.
    pub fn enter(self) -> Result<StreamGuard> {
        let mut prev = 0;
        shim(|err, cap| unsafe { selfsup_stream_exchange(self.device, self.id, &mut prev, err, cap) })?;
        Ok(StreamGuard { prev: Stream { device: self.device, id: prev } })
    }

    /// Keeps the caching allocator from reusing `t`'s memory before this
    /// stream's work queued so far is done with it.
    pub fn keep_alive(self, t: &Tensor) -> Result<()> {
        shim(|err, cap| unsafe { selfsup_record_stream(t.as_ptr(), self.device, self.id, err, cap) })
    }
}

/// Restores the previous current stream when dropped.
pub struct StreamGuard {
    prev: Stream,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut ignored = 0;
        let _ = shim(|err, cap| unsafe { selfsup_stream_exchange(self.prev.device, self.prev.id, &mut ignored, err, cap) });
    }
}

/// A CUDA event with timing enabled.
pub struct Event(*mut c_void);

// SAFETY: a c10::Event is a handle to a CUDA event, usable from any thread
// (it moves with the trainer's state, which lives on one thread).
unsafe impl Send for Event {}

impl Event {
    pub fn new() -> Result<Self> {
        let mut ev = std::ptr::null_mut();
        shim(|err, cap| unsafe { selfsup_event_new(&mut ev, err, cap) })?;
        Ok(Event(ev))
    }

    /// Marks the point of `stream`'s queue it has reached once the work queued so far is done.
    pub fn record(&self, stream: Stream) -> Result<()> {
        shim(|err, cap| unsafe { selfsup_event_record(self.0, stream.device, stream.id, err, cap) })
    }

    /// `stream` waits on the device for this event; the host does not.
    pub fn block(&self, stream: Stream) -> Result<()> {
        shim(|err, cap| unsafe { selfsup_event_block(self.0, stream.device, stream.id, err, cap) })
    }

    /// The host waits for the event.
    pub fn synchronize(&self) -> Result<()> {
        shim(|err, cap| unsafe { selfsup_event_synchronize(self.0, err, cap) })
    }

    /// Seconds from `self` to `end`; both must be recorded and complete.
    pub fn seconds_to(&self, end: &Event) -> Result<f64> {
        let mut ms = 0.0;
        shim(|err, cap| unsafe { selfsup_event_elapsed_ms(self.0, end.0, &mut ms, err, cap) })?;
        Ok(ms / 1e3)
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        unsafe { selfsup_event_free(self.0) }
    }
}

/// The CUDA device index of `device`, None for the CPU.
pub fn cuda_index(device: Device) -> Option<usize> {
    match device {
        Device::Cuda(i) => Some(i),
        _ => None,
    }
}
