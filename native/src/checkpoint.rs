//! Everything a run needs to continue bit-for-bit, as named tensors:
//! `model.<var>` (online and BYOL target weights, BN buffers),
//! `optim.<param>.<slot>` and `optim.steps`, `polyak.<param>`, and with
//! a loss scaler (fp16) `amp.scale`, `amp.growth_tracker`, `amp.skipped`.
//! Tensors are written contiguous (channels_last weights included). The
//! schedule position, config and best loss live in the JSON sidecar that
//! TypeScript writes (train/checkpoint.ts); it names this file, so the
//! pair is committed by the sidecar's rename.
use crate::model::Model;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use tch::Tensor;

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

/// Writes `tensors` to `path` so that a crash never leaves a torn file:
/// a temporary file in the same folder, fsync, rename, fsync the folder.
pub fn write_atomically(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("checkpoint"), std::process::id()));
    Tensor::write_safetensors(tensors, &tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("cannot sync {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        bail!("no such checkpoint: {}", path.display());
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| anyhow::anyhow!("{} is not a readable checkpoint ({})", path.display(), crate::status::first_line(&e.to_string())))?;
    Ok(tensors.into_iter().collect())
}
