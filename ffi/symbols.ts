/**
 * Every native symbol selfsup uses, declared once. The C side is
 * native/src/ffi.rs. Convention: an `i64` result `>= 0` is the value
 * (handle id, length, count), `< 0` is `-id` of an error whose message
 * `selfsup_last_error` returns. Strings are (UTF-8 bytes, byte length).
 * Long calls are `nonblocking` so signals and timers keep running.
 *
 * @module
 */
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
  /** (trainer id, input path, length, output path, length) → 0: loss and gradients, no update */
  selfsup_trainer_debug_gradients: {
    parameters: ["i64", "buffer", "usize", "buffer", "usize"],
    result: "i64",
    nonblocking: true,
  },
  /** (trainer id, variable name, length (0: the first parameter)) → 0: a NaN into that variable (tests of the non-finite stop) */
  selfsup_trainer_debug_poison: { parameters: ["i64", "buffer", "usize"], result: "i64", nonblocking: true },
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
  /** (trainer id, input path, length, output path, length) → 0: eval features of "images" */
  selfsup_trainer_debug_features: {
    parameters: ["i64", "buffer", "usize", "buffer", "usize"],
    result: "i64",
    nonblocking: true,
  },
  /** (what: loss|optimizer|backbone, or a data piece: crop_boxes|crop_resize|decode|augment_op|apply; JSON spec, input path, output path; each as bytes + length) → 0 */
  selfsup_debug_run: {
    parameters: ["buffer", "usize", "buffer", "usize", "buffer", "usize", "buffer", "usize"],
    result: "i64",
    nonblocking: true,
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** Length of the metrics a step fills: loss, ssl loss, linear loss, top-1, top-5, samples. */
export const METRICS = 6;
/** Length of a deferred step's row: the METRICS, the loss scale it used (0: no scaler), skipped (1) or not (0), non-finite weights or state after it on any replica (1) or not (0). */
export const STEP_ROW = 9;
