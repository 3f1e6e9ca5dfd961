//! The data path of a trainer, from a host batch to a step's metrics on the
//! host, and where its time goes.
//!
//! - **One copy per batch.** A batch's images, labels and augmentation
//!   plans are one host buffer (data/buffer.rs), pinned when training on
//!   CUDA, copied to the device in one non-blocking copy. On CUDA the copy
//!   runs on a side stream: while the host runs ahead of the GPU (metrics
//!   are read back every few steps), the next batch's copy overlaps the
//!   current step's kernels. The compute stream waits for the copy with an
//!   event (on the device, not the host), and the copied memory is marked
//!   in use by the compute stream (`record_stream`), so the caching
//!   allocator does not hand it to the next copy too early.
//! - **Metrics come back without a synchronisation per step.** Each step's
//!   row is copied to pinned host memory behind the step on the compute
//!   stream; reading rows back waits only for the last row read.
//! - **Stage timings**: each step's boundaries (copy start and end,
//!   augmentation start, step start and end) are wall-clock instants on the
//!   CPU and CUDA events on the GPU, resolved when the step's row is read
//!   back, where the host waits anyway; they add no synchronisation.
pub mod cuda;
pub mod profile;

use crate::data::buffer::DeviceBatch;
use crate::data::loader::Batch;
use anyhow::{bail, Result};
use cuda::{Event, Stream};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Seconds the training steps spent in each stage on the device (on the
/// CPU: on the trainer's thread), summed since the last `take_times`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StageTimes {
    /// The batch's host→device copy.
    pub copy: f64,
    /// Views from the uint8 batch and the photometric augmentations.
    pub augment: f64,
    /// Forward, backward, update (and all-reduces), the metrics' copy to the host.
    pub step: f64,
    /// Steps counted.
    pub steps: u64,
}

/// A stage boundary.
enum Mark {
    Wall(Instant),
    Event(Event),
}

/// A step's marks: copy start, copy end, augmentation start, step start, step end.
pub struct Marks(Vec<Mark>);

/// The CUDA streams of a trainer's thread.
#[derive(Clone, Copy)]
struct Streams {
    compute: Stream,
    copy: Stream,
}

struct Pending {
    /// The row on the host (pinned, filled asynchronously on CUDA).
    row: Tensor,
    samples: usize,
    marks: Marks,
}

pub struct Pipeline {
    device: Device,
    streams: Option<Streams>,
    /// Events of resolved steps, for reuse.
    spare: Vec<Event>,
    pending: VecDeque<Pending>,
    times: StageTimes,
}

impl Pipeline {
    /// On the trainer's own thread: its current stream is the compute stream.
    pub fn new(device: Device) -> Result<Self> {
        let streams = match cuda::cuda_index(device) {
            Some(i) => Some(Streams { compute: Stream::current(i)?, copy: Stream::from_pool(i)? }),
            None => None,
        };
        Ok(Pipeline { device, streams, spare: Vec::new(), pending: VecDeque::new(), times: StageTimes::default() })
    }

    fn mark_on(&mut self, stream: Option<Stream>) -> Result<Mark> {
        let Some(stream) = stream else { return Ok(Mark::Wall(Instant::now())) };
        let ev = match self.spare.pop() {
            Some(ev) => ev,
            None => Event::new()?,
        };
        ev.record(stream)?;
        Ok(Mark::Event(ev))
    }

    /// Marks the next boundary of `marks` on the compute stream (or the wall clock).
    pub fn mark(&mut self, marks: &mut Marks) -> Result<()> {
        let m = self.mark_on(self.streams.map(|s| s.compute))?;
        marks.0.push(m);
        Ok(())
    }

    /// The batch's bytes on the device, with the copy's marks (the first
    /// three). On the CPU the tensors share the host buffer: no copy.
    pub fn upload(&mut self, batch: &Batch) -> Result<(DeviceBatch, Marks)> {
        let _range = profile::Range::new(c"selfsup::copy");
        let host = batch.host.bytes()?;
        let Some(s) = self.streams else {
            let t = Instant::now();
            let on = batch.host.split(&host, batch.n)?;
            return Ok((on, Marks(vec![Mark::Wall(t), Mark::Wall(Instant::now()), Mark::Wall(Instant::now())])));
        };
        let (start, dev, end) = {
            let _on_copy_stream = s.copy.enter()?;
            let start = self.mark_on(Some(s.copy))?;
            // Allocated on the copy stream, so only that stream's earlier work can have used the memory.
            let dev = host.f_to_device_(self.device, Kind::Uint8, batch.host.is_pinned(), false)?;
            (start, dev, self.mark_on(Some(s.copy))?)
        };
        let Mark::Event(done) = &end else { bail!("a CUDA copy without its event") };
        done.block(s.compute)?;
        s.compute.keep_alive(&dev)?;
        let mut marks = Marks(vec![start, end]);
        self.mark(&mut marks)?;
        Ok((batch.host.split(&dev, batch.n)?, marks))
    }

    /// A step's row of metrics on its way to the host: on CUDA a
    /// non-blocking copy into pinned memory, queued behind the step.
    pub fn to_host(&self, row: &Tensor) -> Result<Tensor> {
        Ok(row.f_to_device_(Device::Cpu, Kind::Double, self.streams.is_some(), false)?)
    }

    /// Keeps a finished step (`marks` complete) until `take`.
    pub fn defer(&mut self, row: Tensor, samples: usize, marks: Marks) {
        self.pending.push_back(Pending { row, samples, marks });
    }

    /// Steps deferred and not yet taken.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The rows and sample counts of the oldest `count` deferred steps,
    /// waiting only for the last of them; their stage times are added up.
    pub fn take(&mut self, count: usize) -> Result<Vec<(Vec<f64>, usize)>> {
        let count = count.min(self.pending.len());
        let taken: Vec<Pending> = self.pending.drain(..count).collect();
        if let Some(Mark::Event(last)) = taken.last().and_then(|p| p.marks.0.last()) {
            last.synchronize()?;
        }
        let mut out = Vec::with_capacity(count);
        for p in taken {
            out.push((Vec::<f64>::try_from(&p.row)?, p.samples));
            self.resolve(p.marks)?;
        }
        Ok(out)
    }

    /// A finished step's row read at once (the host waits for it).
    pub fn read_now(&mut self, row: Tensor, marks: Marks) -> Result<Vec<f64>> {
        if let Some(Mark::Event(last)) = marks.0.last() {
            last.synchronize()?;
        }
        let host = Vec::<f64>::try_from(&row)?;
        self.resolve(marks)?;
        Ok(host)
    }

    /// Adds a complete step's stage times; its events go back for reuse.
    fn resolve(&mut self, marks: Marks) -> Result<()> {
        let m = marks.0;
        if m.len() != 5 {
            bail!("a step has {} stage marks, expected 5", m.len());
        }
        let secs = |a: &Mark, b: &Mark| -> Result<f64> {
            Ok(match (a, b) {
                (Mark::Wall(a), Mark::Wall(b)) => b.duration_since(*a).as_secs_f64(),
                (Mark::Event(a), Mark::Event(b)) => a.seconds_to(b)?,
                _ => bail!("a step's stage marks mix clocks"),
            })
        };
        self.times.copy += secs(&m[0], &m[1])?;
        self.times.augment += secs(&m[2], &m[3])?;
        self.times.step += secs(&m[3], &m[4])?;
        self.times.steps += 1;
        self.spare.extend(m.into_iter().filter_map(|m| match m {
            Mark::Event(e) => Some(e),
            Mark::Wall(_) => None,
        }));
        Ok(())
    }

    /// The stage times of the steps read back since the last call.
    pub fn take_times(&mut self) -> StageTimes {
        std::mem::take(&mut self.times)
    }
}
