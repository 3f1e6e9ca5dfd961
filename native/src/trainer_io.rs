//! What a trainer reads and writes besides steps: checkpoints, a
//! backbone from an export, and frozen-backbone evaluation.
use crate::checkpoint;
use crate::data::loader::Batch;
use crate::evaluate::{self, LinearProbe};
use crate::trainer::State;
use anyhow::{bail, Context, Result};
use std::path::Path;

impl State {
    /// Writes every tensor needed to resume to `path`, atomically; refuses
    /// (writing nothing, so the previous checkpoint stays the last good
    /// one) when any of them holds an inf or NaN; returns the file's SHA-256 (hex).
    pub fn save_checkpoint(&self, path: &Path) -> Result<String> {
        let tensors = self.model.checkpoint_tensors()?;
        for (name, t) in tensors.iter().filter(|(_, t)| t.is_floating_point()) {
            if t.f_isfinite()?.f_logical_not()?.f_any()?.f_int64_value(&[])? != 0 {
                bail!("not writing {}: {name} holds inf or NaN values; the previous checkpoint is kept", path.display());
            }
        }
        checkpoint::write_atomically(path, &tensors)
    }

    /// Restores a checkpoint; with `sha256`, only if the file has that checksum.
    pub fn load_checkpoint(&mut self, path: &Path, sha256: Option<&str>) -> Result<()> {
        let saved = checkpoint::read(path, sha256)?;
        self.model.restore(saved, path)
    }

    /// Loads backbone weights with torchvision's names (an export) into
    /// the online backbone; every backbone tensor must be present.
    pub fn load_backbone(&mut self, path: &Path) -> Result<()> {
        let saved = checkpoint::read(path, None)?;
        let vars = self.model.vs.variables();
        let _g = tch::no_grad_guard();
        for (name, var) in vars.iter().filter(|(n, _)| n.starts_with("backbone.")) {
            let key = &name["backbone.".len()..];
            let t = saved.get(key).with_context(|| format!("{} has no {key}: not a backbone of this --arch", path.display()))?;
            if t.size() != var.size() {
                bail!("{}: {key} has shape {:?}, --arch needs {:?}", path.display(), t.size(), var.size());
            }
            var.shallow_clone().f_copy_(&t.f_to_device(var.device())?)?;
        }
        Ok(())
    }

    /// Frozen features of a test-mode batch (consumed) into split `set`
    /// (0 train, 1 test) under `weights` (online, polyak, target).
    pub fn embed(&mut self, batch: Batch, set: usize, weights: &str) -> Result<()> {
        if set > 1 {
            bail!("feature set must be 0 (train) or 1 (test)");
        }
        let (on, _) = self.pipe.upload(&batch)?;
        let x = crate::augment::test_images(&on)?;
        let f = self.model.features(&x, weights)?;
        // The labels copied out: a view would keep the batch's whole buffer alive.
        let mut y = on.labels.f_zeros_like()?;
        y.f_copy_(&on.labels)?;
        self.features[set].push(f.f_detach()?, y);
        Ok(())
    }

    pub fn clear_features(&mut self) {
        self.features = Default::default();
    }

    pub fn linear_probe(&self, classes: i64, p: &LinearProbe) -> Result<[f64; 2]> {
        evaluate::linear_probe(&self.features[0], &self.features[1], classes, p)
    }

    pub fn knn(&self, classes: i64, k: i64, temperature: f64) -> Result<[f64; 2]> {
        evaluate::knn(&self.features[0], &self.features[1], classes, k, temperature)
    }
}
