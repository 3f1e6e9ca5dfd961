//! Everything a run needs to continue bit-for-bit, as named tensors:
//! `model.<var>` (online and BYOL target weights, BN buffers),
//! `optim.<param>.<slot>` and `optim.steps`, `polyak.<param>`, and with
//! a loss scaler (fp16) `amp.scale`, `amp.growth_tracker`, `amp.skipped`.
//! Tensors are written contiguous (channels_last weights included). The
//! schedule position, config and best loss live in the JSON sidecar that
//! TypeScript writes (train/checkpoint.ts); it names this file, so the
//! pair is committed by the sidecar's rename.
//!
//! The file is written here rather than by tch so that its SHA-256 is
//! computed while the bytes go out (the sidecar records it and a load
//! verifies it), the free space is checked before anything is written, and
//! no temporary file outlives a failed write.
use crate::model::Model;
use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

impl Model {
    pub fn checkpoint_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in vars {
            out.push((format!("model.{name}"), t));
        }
        for p in &self.params {
            for (i, s) in p.state.iter().enumerate() {
                out.push((format!("optim.{}.{i}", p.name), s.shallow_clone()));
            }
        }
        out.push(("optim.steps".into(), Tensor::from_slice(&[self.opt.steps()?])));
        if let Some(s) = &self.scaler {
            for (name, t) in s.state() {
                out.push((name.into(), t.shallow_clone()));
            }
        }
        if let Some(polyak) = &self.polyak {
            for (p, s) in self.params.iter().zip(&polyak.shadow) {
                out.push((format!("polyak.{}", p.name), s.shallow_clone()));
            }
        }
        let _g = tch::no_grad_guard();
        out.into_iter()
            .map(|(n, t)| Ok((n, t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_contiguous()?)))
            .collect()
    }

    /// Restores what `checkpoint_tensors` wrote; a tensor that is missing
    /// or has another shape means the checkpoint belongs to another model.
    /// A scaler absent from the file (a run resumed with another
    /// --precision) starts afresh; one the model lacks is ignored.
    pub fn restore(&mut self, mut saved: BTreeMap<String, Tensor>, origin: &Path) -> Result<()> {
        let _g = tch::no_grad_guard();
        let dev = self.device();
        let has_scaler = saved.contains_key("amp.scale");
        let mut take = |name: &str, like: Option<&Tensor>| -> Result<Tensor> {
            let t = saved.remove(name).with_context(|| {
                format!("{} has no {name}: it was made by another --method/--arch or settings", origin.display())
            })?;
            if let Some(like) = like {
                if t.size() != like.size() {
                    bail!(
                        "{} holds {name} of shape {:?}, this model needs {:?}: it was made by another --arch or settings",
                        origin.display(),
                        t.size(),
                        like.size()
                    );
                }
            }
            Ok(t.f_to_device(dev)?)
        };
        let vars = self.vs.variables();
        for (name, var) in &vars {
            let t = take(&format!("model.{name}"), Some(var))?;
            var.shallow_clone().f_copy_(&t)?;
        }
        for p in self.params.iter_mut() {
            let mut slots = Vec::new();
            while let Ok(t) = take(&format!("optim.{}.{}", p.name, slots.len()), None) {
                if t.size() != p.tensor.size() {
                    bail!("{}: optimizer state of {} has the wrong shape", origin.display(), p.name);
                }
                // In the parameter's layout (channels_last too): the fused
                // updates walk parameter and state in memory order.
                let mut s = p.tensor.f_empty_like()?;
                s.f_copy_(&t)?;
                slots.push(s);
            }
            p.state = slots;
        }
        let steps = take("optim.steps", None)?.f_int64_value(&[0])?;
        self.opt.set_steps(steps, dev)?;
        if let Some(s) = &mut self.scaler {
            if has_scaler {
                for (name, t) in [("amp.scale", &mut s.scale), ("amp.growth_tracker", &mut s.growth_tracker), ("amp.skipped", &mut s.skipped)] {
                    let v = take(name, Some(&*t))?;
                    t.f_copy_(&v)?;
                }
            }
        }
        if let Some(polyak) = &self.polyak {
            for (p, s) in self.params.iter().zip(&polyak.shadow) {
                s.shallow_clone().f_copy_(&take(&format!("polyak.{}", p.name), Some(s))?)?;
            }
        }
        if let Some(extra) = saved.keys().find(|k| k.starts_with("model.")) {
            bail!("{} holds {extra}, which this model does not have: it was made by another --method/--arch", origin.display());
        }
        Ok(())
    }
}

/// The temporary name a checkpoint is written under: hidden, in the same
/// folder, tagged with the writer's pid (train/checkpoint.ts removes the
/// leftovers of dead writers by this pattern).
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint");
    folder_of(path).join(format!(".{name}.tmp-{}", std::process::id()))
}

fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `tensors` to `path` as safetensors so that a crash never leaves
/// a torn file: a temporary file in the same folder, fsync, rename, fsync
/// the folder. Returns the SHA-256 of the file (hex). On any error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomically(path: &Path, tensors: &[(String, Tensor)]) -> Result<String> {
    let dir = folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let header = header_of(tensors)?;
    let size = 8 + header.len() as u64 + tensors.iter().map(|(_, t)| bytes_of(t)).sum::<u64>();
    ensure_space(dir, size)?;
    let tmp = temp_path(path);
    let written = write_file(&tmp, path, &header, tensors).and_then(|digest| {
        std::fs::rename(&tmp, path).map_err(|e| anyhow!("cannot rename {} to {}: {e}", tmp.display(), path.display()))?;
        Ok(digest)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    written
}

/// Writes the file at `tmp`; errors name `path`, the file the user knows.
fn write_file(tmp: &Path, path: &Path, header: &[u8], tensors: &[(String, Tensor)]) -> Result<String> {
    let fail = |e: std::io::Error| anyhow!("cannot write {}: {e}", path.display());
    let file = File::create(tmp).map_err(fail)?;
    let mut out = Hashing { inner: BufWriter::with_capacity(1 << 20, file), hash: Sha256::new() };
    out.write_all(&(header.len() as u64).to_le_bytes()).map_err(fail)?;
    out.write_all(header).map_err(fail)?;
    let mut buf = Vec::new();
    for (name, t) in tensors {
        buf.resize(bytes_of(t) as usize, 0);
        t.f_copy_data_u8(&mut buf, t.numel()).with_context(|| format!("cannot copy {name} for {}", path.display()))?;
        out.write_all(&buf).map_err(fail)?;
    }
    let file = out.inner.into_inner().map_err(|e| fail(e.into_error()))?;
    file.sync_all().map_err(fail)?;
    Ok(hex(&out.hash.finalize()))
}

/// A writer that hashes what passes through it: the checksum costs no
/// second read of a file that may be gigabytes.
struct Hashing<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hash.update(&bytes[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn bytes_of(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

/// The safetensors header: name → dtype, shape and byte range, in the
/// given order, padded with spaces to a multiple of 8 bytes.
fn header_of(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut offset = 0u64;
    for (name, t) in tensors {
        if !t.is_contiguous() || t.device() != tch::Device::Cpu {
            bail!("internal error: checkpoint tensor {name} is not contiguous on the CPU");
        }
        let dtype = safetensors::Dtype::try_from(t.kind()).map_err(|e| anyhow!("cannot save {name}: {e}"))?;
        let end = offset + bytes_of(t);
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": format!("{dtype:?}"), "shape": t.size(), "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_vec(&header)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    Ok(text)
}

/// Refuses a write that cannot fit: a checkpoint that fills the disk
/// halfway fails anyway, after evicting what else needed the space.
fn ensure_space(dir: &Path, needed: u64) -> Result<()> {
    let Some(free) = free_bytes(dir) else { return Ok(()) };
    // Slack for the file system's own blocks and the sidecar.
    let wanted = needed + needed / 100 + (1 << 20);
    if free < wanted {
        bail!(
            "not enough space for a checkpoint in {}: it needs {:.1} MB, {:.1} MB are free; free some space there or choose another --model-dir",
            dir.display(),
            wanted as f64 / 1e6,
            free as f64 / 1e6
        );
    }
    Ok(())
}

/// Bytes an unprivileged writer may still use on `dir`'s file system, or
/// None when the system cannot tell.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Every tensor of the checkpoint at `path`. With `sha256`, the file's
/// checksum must match it (one pass over bytes that are read anyway). A
/// floating-point tensor holding NaN or infinity is refused: resuming
/// from it could only train on garbage, and the cause is the file, not
/// the settings of the run that loads it.
pub fn read(path: &Path, sha256: Option<&str>) -> Result<BTreeMap<String, Tensor>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!("no such checkpoint: {}", path.display()),
        Err(e) => bail!("cannot read {}: {e}", path.display()),
    };
    if let Some(want) = sha256 {
        let got = hex(&Sha256::digest(&bytes));
        if !got.eq_ignore_ascii_case(want) {
            bail!(
                "{} is damaged: its SHA-256 is {got}, the sidecar recorded {want} (the file changed after it was saved); use another checkpoint",
                path.display()
            );
        }
    }
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{} is not a readable checkpoint ({})", path.display(), unreadable(&e)))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let kind = Kind::try_from(view.dtype()).map_err(|e| anyhow!("{}: {name}: {e}", path.display()))?;
        let size: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &size, kind)?;
        if t.is_floating_point() && !bool::try_from(t.f_isfinite()?.f_all()?)? {
            bail!(
                "{} holds NaN or infinite values in {name}: the checkpoint is unsound (damaged, or saved after training diverged); use an earlier checkpoint",
                path.display()
            );
        }
        out.insert(name, t);
    }
    Ok(out)
}

/// Why safetensors refused a file, in words (its errors only have Debug).
fn unreadable(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooSmall | E::InvalidHeaderLength | E::MetadataIncompleteBuffer => "it is truncated".into(),
        E::InvalidOffset(name) => format!("{name} lies outside the file: truncated?"),
        E::InvalidHeader | E::InvalidHeaderStart | E::InvalidHeaderDeserialization | E::HeaderTooLarge | E::JsonError(_) => {
            "its header is not a safetensors header".into()
        }
        other => crate::status::first_line(&format!("{other:?}")),
    }
}
