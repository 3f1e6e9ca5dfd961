//! The C entry points of the test hooks (`testing` feature only; bench.rs
//! has the benchmark's). One symbol per operation, so that a caller names
//! an operation by its symbol rather than by a string the library matches:
//! ffi/symbols.ts declares the same list in `hooks`, as optional symbols,
//! so that the release library, which has none of them, still loads.
//!
//! Conventions as in ffi.rs: strings are (UTF-8 bytes, byte length), the
//! result is 0 or `-id` of an error.
use crate::data::debug as data;
use crate::ffi::{text, trainer};
use crate::status::guard;
use crate::trainer::State;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Whether this library has the hooks: ffi/lib.ts asks before it calls
/// one, since Deno (2.9) turns a missing symbol declared optional into
/// null only for a blocking one (this), not for the nonblocking hooks.
#[no_mangle]
pub extern "C" fn selfsup_has_hooks() -> i64 {
    1
}

/// Reads two (bytes, length) strings as paths.
unsafe fn paths(i: (*const u8, usize), o: (*const u8, usize)) -> Result<(PathBuf, PathBuf)> {
    Ok((PathBuf::from(text(i.0, i.1)?), PathBuf::from(text(o.0, o.1)?)))
}

/// One `extern "C" fn NAME(spec, len, input, len, output, len) -> i64`
/// per line `NAME => RUN;`, RUN taking (spec, input path, output path):
/// a piece of selfsup on tensors a parity test wrote (debug.rs).
macro_rules! file_hooks {
    ($($(#[doc = $doc:expr])* $name:ident => $run:expr;)*) => {$(
        $(#[doc = $doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            spec: *const u8,
            spec_len: usize,
            input: *const u8,
            input_len: usize,
            output: *const u8,
            output_len: usize,
        ) -> i64 {
            guard(|| {
                let (spec, (i, o)) = (text(spec, spec_len)?, paths((input, input_len), (output, output_len))?);
                let run: fn(&str, &Path, &Path) -> Result<()> = $run;
                run(spec, &i, &o)?;
                Ok(0)
            })
        }
    )*};
}

file_hooks! {
    /// A loss and its gradients (debug::loss).
    selfsup_debug_loss => crate::debug::loss;
    /// Optimizer steps on given gradients (debug::optimizer).
    selfsup_debug_optimizer => crate::debug::optimizer;
    /// A backbone's initial state and features (debug::backbone).
    selfsup_debug_backbone => crate::debug::backbone;
    /// Autocast's dtype policy on a small model (debug::amp_policy).
    selfsup_debug_amp_policy => |spec, _, o| crate::debug::amp_policy(spec, o);
    /// The dtype of every layer's output under autocast (debug::amp_trace).
    selfsup_debug_amp_trace => crate::debug::amp_trace;
    /// The CPU bf16 guard's decision (debug::cpu_bf16_guard).
    selfsup_debug_cpu_bf16_guard => |spec, _, o| crate::debug::cpu_bf16_guard(spec, o);
    /// The data pipeline's pieces (data/debug.rs), each writing one tensor.
    selfsup_debug_crop_boxes => |s, i, o| data::run(data::crop_boxes, "boxes", s, i, o);
    selfsup_debug_augment_params => |s, i, o| data::run(data::augment_params, "params", s, i, o);
    selfsup_debug_crop_resize => |s, i, o| data::run(data::crop_resize, "out", s, i, o);
    selfsup_debug_decode => |s, i, o| data::run(data::decode, "image", s, i, o);
    selfsup_debug_augment_op => |s, i, o| data::run(data::augment_op, "out", s, i, o);
    selfsup_debug_apply => |s, i, o| data::run(data::apply, "out", s, i, o);
}

/// The same for a trainer's hooks: `extern "C" fn NAME(trainer id,
/// input, len, output, len) -> i64`, RUN taking (its state, input path,
/// output path) on the trainer's thread.
macro_rules! trainer_file_hooks {
    ($($(#[doc = $doc:expr])* $name:ident => $run:expr;)*) => {$(
        $(#[doc = $doc])*
        #[no_mangle]
        pub unsafe extern "C" fn $name(id: i64, input: *const u8, input_len: usize, output: *const u8, output_len: usize) -> i64 {
            guard(|| {
                let (i, o) = paths((input, input_len), (output, output_len))?;
                let run: fn(&mut State, &Path, &Path) -> Result<()> = $run;
                trainer(id)?.call(move |s| run(s, &i, &o))?;
                Ok(0)
            })
        }
    )*};
}

trainer_file_hooks! {
    /// Export test: eval features of `images` under the online weights.
    selfsup_trainer_debug_features => |s, input, output| {
        let named: BTreeMap<String, Tensor> = Tensor::read_safetensors(input)?.into_iter().collect();
        let x = named.get("images").context("input has no images")?.f_to_device(s.model.device())?;
        let f = s.model.features(&x, "online")?;
        Ok(Tensor::write_safetensors(&[("features".to_string(), f.f_contiguous()?)], output)?)
    };
    /// Parity tests: loss and gradients for the views in `input`, no update.
    selfsup_trainer_debug_gradients => |s, input, output| s.debug_gradients(input, output);
}

/// Tests of the non-finite stop: puts a NaN into variable `name` (UTF-8,
/// `len` bytes; empty: the first parameter) of this replica's model.
#[no_mangle]
pub unsafe extern "C" fn selfsup_trainer_debug_poison(id: i64, name: *const u8, len: usize) -> i64 {
    guard(|| {
        let name = if len == 0 { String::new() } else { text(name, len)?.to_string() };
        trainer(id)?.call(move |s| s.debug_poison(&name))?;
        Ok(0)
    })
}
