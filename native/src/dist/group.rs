//! A c10d process group (native/shim/dist_core.cpp): TCPStore rendezvous,
//! ProcessGroupGloo on CPU or ProcessGroupNCCL on CUDA, and the few
//! collectives selfsup needs.
use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, CStr, CString};
use std::io::ErrorKind;
use std::net::{IpAddr, TcpListener};
use std::os::fd::IntoRawFd;
use std::time::Duration;
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

#[repr(C)]
pub(crate) struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn selfsup_dist_has_nccl() -> c_int;
    fn selfsup_dist_quiet_logs();
    fn selfsup_dist_group_new(
        host: *const c_char,
        port: u16,
        rank: c_int,
        world: c_int,
        serve: c_int,
        listen_fd: c_int,
        prefix: *const c_char,
        backend: c_int,
        device: c_int,
        timeout_ms: i64,
        out: *mut *mut RawGroup,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_dist_group_free(g: *mut RawGroup);
    fn selfsup_dist_all_reduce(g: *mut RawGroup, ts: *const *const C_tensor, n: usize, op: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn selfsup_dist_broadcast(
        g: *mut RawGroup,
        ts: *const *const C_tensor,
        n: usize,
        root: c_int,
        bucket_bytes: i64,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn selfsup_dist_all_gather(g: *mut RawGroup, x: *const C_tensor, out: *mut *mut C_tensor, err: *mut c_char, cap: usize) -> c_int;
}

/// Runs a shim call that reports failure as 1 plus a message.
pub(crate) fn shim(call: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = vec![0u8; 8192];
    if call(buf.as_mut_ptr() as *mut c_char, buf.len()) == 0 {
        return Ok(());
    }
    let msg = CStr::from_bytes_until_nul(&buf).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
    bail!("{}", if msg.is_empty() { "unknown c10d error".to_string() } else { msg })
}

/// The socket rank 0 serves the rendezvous store on. When the master is an
/// IP address, the store listens on that address alone: 127.0.0.1 (what
/// `selfsup launch` uses) keeps it off the network, and a cluster's private
/// address keeps it off the others. A host name leaves c10d's default,
/// every interface (as torchrun): the name may resolve to a loopback alias
/// on its own machine while other nodes reach it by another address.
/// Returns -1 for that default; the store owns the descriptor otherwise.
fn store_socket(rv: &Rendezvous) -> Result<c_int> {
    let ip = match rv.master.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => return Ok(-1),
    };
    match TcpListener::bind((ip, rv.port)) {
        Ok(listener) => Ok(listener.into_raw_fd()),
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => bail!(
            "rank 0 cannot serve the rendezvous on {ip}: it is not an address of this machine; give --distributed-master (or MASTER_ADDR) an address of rank 0's machine"
        ),
        Err(e) => Err(super::faults::rendezvous_error(anyhow::anyhow!("{e}"), rv)),
    }
}

/// True when this build can make NCCL process groups.
pub fn has_nccl() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { selfsup_dist_has_nccl() == 1 }
}

/// How to reduce in an all-reduce.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

/// Where to meet and for how long to wait.
#[derive(Clone, Debug)]
pub struct Rendezvous {
    pub master: String,
    pub port: u16,
    pub rank: usize,
    pub world: usize,
    pub timeout: Duration,
    /// Under torchrun its agent serves the store (TORCHELASTIC_USE_AGENT_STORE):
    /// every rank connects, none serves, and keys carry the restart count.
    pub agent_store: Option<u32>,
}

/// One rank's membership in a process group; collectives run on `device`
/// (CPU: Gloo, CUDA: NCCL). Lives on the thread that made it.
pub struct Group {
    raw: *mut RawGroup,
    pub rank: usize,
    pub world: usize,
    pub device: Device,
}

impl Group {
    /// Joins the group: blocks until every rank arrived, or fails after
    /// `rv.timeout` with a message naming what did not happen.
    pub fn join(rv: &Rendezvous, device: Device) -> Result<Group> {
        let (backend, index) = match device {
            Device::Cpu => (0, 0),
            Device::Cuda(i) if has_nccl() => (1, i as c_int),
            Device::Cuda(_) => bail!("this selfsup was built without NCCL, so it cannot train on several GPUs; rebuild it with the CUDA headers (scripts/bootstrap.sh)"),
            other => bail!("no process group backend for device {other:?}"),
        };
        let host = CString::new(rv.master.clone()).context("--distributed-master contains a NUL byte")?;
        let serve = rv.rank == 0 && rv.agent_store.is_none();
        let listen_fd = if serve { store_socket(rv)? } else { -1 };
        let prefix = CString::new(format!("selfsup/{}/", rv.agent_store.unwrap_or(0)))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: sets one of c10's logging flags.
        unsafe { selfsup_dist_quiet_logs() };
        let timeout_ms = rv.timeout.as_millis().min(i64::MAX as u128) as i64;
        // SAFETY: host is NUL-terminated, raw is written only on success.
        shim(|err, cap| unsafe {
            selfsup_dist_group_new(
                host.as_ptr(),
                rv.port,
                rv.rank as c_int,
                rv.world as c_int,
                serve as c_int,
                listen_fd,
                prefix.as_ptr(),
                backend,
                index,
                timeout_ms,
                &mut raw,
                err,
                cap,
            )
        })
        .map_err(|e| super::faults::rendezvous_error(e, rv))?;
        Ok(Group { raw, rank: rv.rank, world: rv.world, device })
    }

    /// In-place all-reduce of `tensors` (on this group's device); blocks.
    pub fn all_reduce(&self, tensors: &[&Tensor], op: ReduceOp) -> Result<()> {
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        // SAFETY: the pointers stay valid for the call; the shim copies handles.
        shim(|err, cap| unsafe { selfsup_dist_all_reduce(self.raw, ptrs.as_ptr(), ptrs.len(), op as c_int, err, cap) })
    }

    /// Rank `root`'s values of `tensors`, in place everywhere (no autograd),
    /// packed into buckets of `bucket_bytes`.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize, bucket_bytes: i64) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        let ptrs: Vec<*const C_tensor> = tensors.iter().map(|t| t.as_ptr()).collect();
        // SAFETY: as in all_reduce.
        shim(|err, cap| unsafe { selfsup_dist_broadcast(self.raw, ptrs.as_ptr(), ptrs.len(), root as c_int, bucket_bytes, err, cap) })
    }

    /// Every rank's `x`, concatenated along dim 0 in rank order. Gradients
    /// flow back to every rank's rows (backward: reduce-scatter, sum).
    pub fn all_gather(&self, x: &Tensor) -> Result<Tensor> {
        let mut out: *mut C_tensor = std::ptr::null_mut();
        // SAFETY: x is valid for the call; out receives a new tensor we own.
        shim(|err, cap| unsafe { selfsup_dist_all_gather(self.raw, x.as_ptr(), &mut out, err, cap) })?;
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Host values summed (or max/min) over ranks.
    pub fn all_reduce_host(&self, values: &mut [f64], op: ReduceOp) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let t = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.all_reduce(&[&t], op)?;
        let host = Vec::<f64>::try_from(&t.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?)?;
        values.copy_from_slice(&host);
        Ok(())
    }

    pub(crate) fn raw(&self) -> *mut RawGroup {
        self.raw
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: raw came from selfsup_dist_group_new and is freed once.
        unsafe { selfsup_dist_group_free(self.raw) }
    }
}
