/**
 * Every native symbol selfsup uses, declared once. The C side is
 * native/src/ffi.rs. Convention: an `i64` result `>= 0` is the value
 * (handle id, length, count), `< 0` is `-id` of an error whose message
 * `selfsup_last_error` returns. Strings are (UTF-8 bytes, byte length).
 * Long calls are `nonblocking` so signals and timers keep running.
 *
 * The test and benchmark hooks (native/src/hooks.rs, bench.rs) are in a
 * library built with the cargo feature `testing` only (what ./selfsup test
 * loads; docs/DESIGN.md): they are `optional`, so the release library
 * loads without them, and lib.ts's `hook` turns a missing one into a
 * one-line error.
 *
 * @module
 */
/** A hook on files: (JSON spec, input path, output path; each as bytes + length) → 0. */
const FILE_HOOK = {
  parameters: ["buffer", "usize", "buffer", "usize", "buffer", "usize"],
  result: "i64",
  nonblocking: true,
  optional: true,
} as const;
/** A trainer's hook on files: (trainer id, input path, length, output path, length) → 0. */
const TRAINER_FILE_HOOK = {
  parameters: ["i64", "buffer", "usize", "buffer", "usize"],
  result: "i64",
  nonblocking: true,
  optional: true,
} as const;

export const symbols = {
  /** (error id or 0 for the newest, out buffer, capacity) → message length, -1 if none */
  selfsup_last_error: { parameters: ["i64", "buffer", "usize"], result: "i64" },
  /** (out buffer, capacity) → length of a JSON object {selfsup, libtorch, cuda, cudaDevices, threads} */
  selfsup_version: { parameters: ["buffer", "usize"], result: "i64" },
  /** (path, path length, seed, train images per class, test images per class, image size) → 0 */
  selfsup_demo_dataset: {
    parameters: ["buffer", "usize", "u64", "u32", "u32", "u32"],
    result: "i64",
    nonblocking: true,
  },
  /** (path, path length, out buffer, capacity) → length of JSON {classes, samples} */
  selfsup_scan_folder: { parameters: ["buffer", "usize", "buffer", "usize"], result: "i64" },
  /** (JSON settings, length) → loader id */
  selfsup_loader_new: { parameters: ["buffer", "usize"], result: "i64", nonblocking: true },
  /** (loader id) → batches per epoch of this replica */
  selfsup_loader_len: { parameters: ["i64"], result: "i64" },
  /** (loader id, epoch, first batch: a resumed run skips the batches it trained on) → 0 */
  selfsup_loader_start_epoch: { parameters: ["i64", "u64", "u64"], result: "i64" },
  /** (loader id) → batch id, or 0 at the end of the epoch */
  selfsup_loader_next: { parameters: ["i64"], result: "i64", nonblocking: true },
  /** (loader id, out buffer, capacity) → length of JSON {samples, classes, inMemory, cachedImages, cachedBytes, skipped} */
  selfsup_loader_report: { parameters: ["i64", "buffer", "usize"], result: "i64" },
  /** (IDX folder, length, output folder, length) → images written: Fashion-MNIST as an ImageFolder */
  selfsup_fashion_mnist: { parameters: ["buffer", "usize", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (any id) → 1 if something was freed, else 0 */
  selfsup_free: { parameters: ["i64"], result: "i64" },
  /** (JSON settings, length) → trainer id */
  selfsup_trainer_new: { parameters: ["buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, batch id (consumed), learning rate, BYOL target decay τ, out Float64Array[6] or null: kept on the device) → 0 */
  selfsup_trainer_train_step: {
    parameters: ["i64", "i64", "f64", "f64", "buffer"],
    result: "i64",
    nonblocking: true,
  },
  /** (trainer id, out Float64Array[STEP_ROW × rows], rows) → rows taken: the oldest steps run with a null metrics buffer and not taken yet */
  selfsup_trainer_take_metrics: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, out Float64Array[4]) → 0: seconds in copy, augmentation and step of the steps read back since the last call, and their count */
  selfsup_trainer_stage_times: { parameters: ["i64", "buffer"], result: "i64", nonblocking: true },
  /** () → 0: readies torch's profiler; synchronous, so it runs on the thread that loaded libtorch, as Kineto wants */
  selfsup_profile_prepare: { parameters: [], result: "i64" },
  /** (trainer id, trace path or empty to start, length, out table buffer, capacity) → 0 on start; on stop the table's length */
  selfsup_trainer_profile: { parameters: ["i64", "buffer", "usize", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, batch id (consumed), out Float64Array[6]) → 0 */
  selfsup_trainer_eval_step: { parameters: ["i64", "i64", "buffer"], result: "i64", nonblocking: true },
  /** (trainer id) → 0: before a test pass, rank 0's BatchNorm buffers on every replica (all ranks call it) */
  selfsup_trainer_begin_eval: { parameters: ["i64"], result: "i64", nonblocking: true },
  /** (trainer id, Float64Array values (in place), length, op: 0 sum, 1 max, 2 min) → 0: reduced over replicas (all ranks call it) */
  selfsup_trainer_all_reduce: { parameters: ["i64", "buffer", "usize", "u32"], result: "i64", nonblocking: true },
  /** (trainer id, which: 0/1 last train batch's views, 2 last test batch, out Int64Array[4] N,C,H,W, out buffer or null, capacity) → bytes, 0 if none kept */
  selfsup_trainer_views: { parameters: ["i64", "u32", "buffer", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, path, path length) → 0: every parameter and buffer as safetensors */
  selfsup_trainer_save_weights: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, path, path length) → 0 */
  selfsup_trainer_load_weights: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, path, path length, out SHA-256 as 64 hex bytes) → 0: weights, BYOL target, optimizer and Polyak state, written atomically; refused (nothing written) when any holds inf/NaN */
  selfsup_trainer_save_checkpoint: { parameters: ["i64", "buffer", "usize", "buffer"], result: "i64", nonblocking: true },
  /** (trainer id, path, path length, expected SHA-256 hex, its length or 0 for no check) → 0 */
  selfsup_trainer_load_checkpoint: {
    parameters: ["i64", "buffer", "usize", "buffer", "usize"],
    result: "i64",
    nonblocking: true,
  },
  /** (trainer id, path, path length) → 0: an export's backbone (torchvision names) into the online backbone */
  selfsup_trainer_load_backbone: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true },
  /** (trainer id, batch id (consumed), set 0 train / 1 test / -1 clear, weights 0 online / 1 polyak / 2 target) → 0 */
  selfsup_trainer_embed: { parameters: ["i64", "i64", "i64", "i64"], result: "i64", nonblocking: true },
  /** (trainer id, classes, JSON {linear: {...}} or {knn: {k, temperature}}, length, out Float64Array[2]) → 0 */
  selfsup_trainer_classify: {
    parameters: ["i64", "i64", "buffer", "usize", "buffer"],
    result: "i64",
    nonblocking: true,
  },

  // The hooks (optional).
  /** () → 1: this library has the hooks (blocking: Deno sets a missing nonblocking symbol to a function that fails, not to null) */
  selfsup_has_hooks: { parameters: [], result: "i64", optional: true },
  // A piece of selfsup on tensors a parity test wrote (native/src/debug.rs):
  /** a loss and its gradients */
  selfsup_debug_loss: FILE_HOOK,
  /** optimizer steps on given gradients */
  selfsup_debug_optimizer: FILE_HOOK,
  /** a backbone's initial state and features */
  selfsup_debug_backbone: FILE_HOOK,
  /** autocast's dtype policy on a small model of each method */
  selfsup_debug_amp_policy: FILE_HOOK,
  /** the dtype of every layer's output under autocast */
  selfsup_debug_amp_trace: FILE_HOOK,
  /** the CPU bf16 guard's decision */
  selfsup_debug_cpu_bf16_guard: FILE_HOOK,
  // The data pipeline's pieces (native/src/data/debug.rs), against torchvision:
  /** RandomResizedCrop's boxes */
  selfsup_debug_crop_boxes: FILE_HOOK,
  /** photometric parameters drawn as the loader draws them */
  selfsup_debug_augment_params: FILE_HOOK,
  /** crops of a decoded file, resized */
  selfsup_debug_crop_resize: FILE_HOOK,
  /** a file decoded as PIL's convert("RGB") */
  selfsup_debug_decode: FILE_HOOK,
  /** one photometric op */
  selfsup_debug_augment_op: FILE_HOOK,
  /** every photometric op, with given parameters */
  selfsup_debug_apply: FILE_HOOK,
  /** (trainer id, input path, length, output path, length) → 0: eval features of "images" */
  selfsup_trainer_debug_features: TRAINER_FILE_HOOK,
  /** (trainer id, input path, length, output path, length) → 0: loss and gradients, no update */
  selfsup_trainer_debug_gradients: TRAINER_FILE_HOOK,
  /** (trainer id, variable name, length (0: the first parameter)) → 0: a NaN into that variable (tests of the non-finite stop) */
  selfsup_trainer_debug_poison: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true, optional: true },
  /** bench/step: (trainer id, images, px, classes, seed) → 0: the fixed batch */
  selfsup_trainer_bench_setup: { parameters: ["i64", "u32", "u32", "i64", "u64"], result: "i64", nonblocking: true, optional: true },
  /** bench/step: (trainer id, mode 0 round trip / 1 step on fixed views / 2 train_step, lr, tau, out Float64Array[6], out Float64Array[1] seconds) → 0 */
  selfsup_trainer_bench_step: {
    parameters: ["i64", "u32", "f64", "f64", "buffer", "buffer"],
    result: "i64",
    nonblocking: true,
    optional: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** The names of the hooks: the symbols only a library with the `testing` feature has. */
export type HookName = {
  [K in keyof typeof symbols]: (typeof symbols)[K] extends { optional: true } ? K : never;
}[keyof typeof symbols];

/** The operations of native/src/debug.rs and data/debug.rs, each its own symbol `selfsup_debug_<op>`. */
export type DebugOp = { [K in HookName]: K extends `selfsup_debug_${infer Op}` ? Op : never }[HookName];

/** Length of the metrics a step fills: loss, ssl loss, linear loss, top-1, top-5, samples. */
export const METRICS = 6;
/** Length of a deferred step's row: the METRICS, the loss scale it used (0: no scaler), skipped (1) or not (0), non-finite weights or state after it on any replica (1) or not (0). */
export const STEP_ROW = 9;
