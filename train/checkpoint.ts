/**
 * Checkpoints: a JSON sidecar that names a weights file. The weights file
 * (native, safetensors: model, BYOL target, optimizer and Polyak state)
 * is written atomically under a step-numbered name; then the sidecar is
 * replaced atomically (temp, fsync, rename); then the old weights file is
 * removed. The sidecar's rename is the commit: a crash at any moment
 * leaves a sidecar that names a complete weights file.
 *
 * All randomness is keyed by (seed, epoch, position), so the position
 * (epoch, batch) and the step are the whole of the "RNG state". A
 * checkpoint inside an epoch also keeps the training pass's sums so far,
 * so that the epoch's means after a resume count every batch, and the
 * lengths of the log files at the commit, so that a resumed run cuts what
 * was logged after it (train/logging.ts).
 *
 * Nothing read from a sidecar is trusted: its fields are checked, its
 * weights file must be a plain name beside it, and the file's SHA-256
 * (computed while it was written) must match when it is loaded.
 *
 * @module
 */
import { basename, join } from "node:path";
import { createHash } from "node:crypto";
import { type Config, foreignTo, isMethod, methodChoices, ownSettings } from "./config.ts";
import type { StepMetrics, Trainer } from "../ffi/native.ts";
import { firstLine, tempPath, writeFileAtomically } from "./files.ts";

/** Means of a pass: loss, SSL loss, classifier loss, top-1 and top-5 (%). */
export type PassMetrics = Omit<StepMetrics, "samples">;

export { writeFileAtomically };

export const FORMAT = "selfsup-checkpoint/1";

/** Where training continues and what the reference's saver remembers. */
export interface Position {
  /** The epoch in progress (1-based) and how many of its batches are done. */
  epoch: number;
  batch: number;
  /** Optimisation steps done (the LR and τ schedules' position). */
  step: number;
  /** Best test loss so far (null before the burn-in ends) and epochs since it improved. */
  bestLoss: number | null;
  sinceBest: number;
}

/** Named running totals of the epoch in progress (Meter sums, sample count, loss-scaler counts). */
export type Accumulators = Record<string, number>;

/** Byte lengths of the run's log files (names in its log folder) when a checkpoint was committed. */
export type LogMarks = Record<string, number>;

export interface Sidecar extends Position {
  format: string;
  kind: "last" | "best";
  /** The weights file: a plain name in the sidecar's folder. */
  weights: string;
  /** SHA-256 of the weights file (hex); absent in checkpoints made before it was recorded. */
  sha256?: string;
  savedAt: string;
  config: Config;
  /** The training pass's totals of epoch `epoch` after `batch` batches (absent at batch 0). */
  train?: Accumulators;
  /** The log files' lengths at the commit (absent on ranks that do not log). */
  logs?: LogMarks;
  /** The last finished epoch's numbers, which a finished run prints again. */
  result?: EpochResult;
}

/** One epoch's means (test null without a test split) and whether accuracies mean anything. */
export interface EpochResult {
  epoch: number;
  train: PassMetrics;
  test: PassMetrics | null;
  labelled: boolean;
}

export function sidecarPath(modelDir: string, runName: string, kind: "last" | "best"): string {
  return join(modelDir, `${runName}.${kind}.json`);
}

/** What a save adds to the position. */
export interface SaveExtras {
  /** The epoch's running totals (a checkpoint inside an epoch). */
  train?: Accumulators;
  /** The log files' lengths, taken after they were flushed to disk. */
  logs?: LogMarks | null;
  /** The last finished epoch's means (a finished run prints them again). */
  result?: EpochResult | null;
  /**
   * A checkpoint of this process whose weights are still the trainer's
   * (no step since): its weights file is reused instead of written again.
   */
  same?: Sidecar | null;
}

/** A save in progress, so that an abrupt exit can remove its pieces ({@link abandonSave}). */
let inFlight: { weights: string; sidecar: string; previous: string | null; written: Promise<unknown> } | null = null;

/** Seconds an abrupt exit waits for a weights file being written (a stalled network disk must not hold it forever). */
const ABANDON_WAIT_S = 10;

/** Saves a checkpoint of `kind`; returns its sidecar. */
export async function saveCheckpoint(
  trainer: Trainer,
  cfg: Config,
  kind: "last" | "best",
  pos: Position,
  extras: SaveExtras = {},
): Promise<Sidecar> {
  await Deno.mkdir(cfg.modelDir, { recursive: true });
  const side = sidecarPath(cfg.modelDir, cfg.runName, kind);
  const previous = ownWeightsOf(side, cfg.runName, kind);
  const reuse = extras.same && extras.same.step === pos.step && extras.same.kind === kind ? extras.same : null;
  const weights = reuse?.weights ?? `${cfg.runName}.${kind}-${pos.step}.safetensors`;
  const writing = reuse ? Promise.resolve(reuse.sha256) : trainer.saveCheckpoint(join(cfg.modelDir, weights));
  inFlight = {
    weights: join(cfg.modelDir, weights),
    sidecar: side,
    previous: previous && join(cfg.modelDir, previous),
    written: writing.catch(() => {}),
  };
  try {
    const sha256 = await writing;
    const s: Sidecar = {
      format: FORMAT,
      kind,
      weights,
      sha256,
      savedAt: new Date().toISOString(),
      ...pos,
      ...(extras.train ? { train: extras.train } : {}),
      ...(extras.logs ? { logs: extras.logs } : {}),
      ...(extras.result ? { result: extras.result } : {}),
      config: cfg,
    };
    writeFileAtomically(side, JSON.stringify(s, null, 1) + "\n");
    if (previous && previous !== weights) removeQuietly(join(cfg.modelDir, previous));
    inFlight = null;
    return s;
  } catch (e) {
    await abandonSave();
    throw e;
  }
}

/**
 * Removes the pieces of a save in progress, before an abrupt exit or
 * after a failure: its temp files, and whichever of the new and the
 * previous weights file the sidecar does not name (the sidecar's rename
 * decides which of them is the checkpoint). It first waits (at most
 * ABANDON_WAIT_S) for the native write to end, which could otherwise
 * create its temp file after the clean-up; that save may still commit.
 */
export async function abandonSave(): Promise<void> {
  if (!inFlight) return;
  const { weights, sidecar, previous, written } = inFlight;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([written, new Promise((r) => timer = setTimeout(r, ABANDON_WAIT_S * 1000))]);
  clearTimeout(timer);
  inFlight = null;
  for (const p of [tempPath(weights), tempPath(sidecar)]) removeQuietly(p);
  let named: string | null = null;
  try {
    named = JSON.parse(Deno.readTextFileSync(sidecar)).weights;
  } catch { /* no sidecar yet */ }
  for (const w of [weights, previous]) if (w && basename(w) !== named) removeQuietly(w);
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* not there */ }
}

/**
 * Removes what interrupted saves of run `name` left in `dir`: temp files,
 * and weights files that neither sidecar names. Only the holder of the
 * run's lock may call it (no other process writes these names then).
 * Returns the names removed.
 */
export function removeLeftovers(dir: string, name: string): string[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return [];
  }
  const run = escapeRegExp(name);
  const temp = new RegExp(`^\\.${run}\\.(last|best)(-\\d+\\.safetensors|\\.json)\\.tmp-\\d+$`);
  const weights = new RegExp(`^${run}\\.(last|best)-\\d+\\.safetensors$`);
  const kept = new Set<string>();
  for (const kind of ["last", "best"] as const) {
    const side = sidecarPath(dir, name, kind);
    let text: string | null = null;
    try {
      text = Deno.readTextFileSync(side);
    } catch { /* none */ }
    if (text === null) continue;
    const own = ownWeightsOf(side, name, kind);
    // A sidecar that cannot be read keeps every weights file of its kind.
    if (own === null) entries.filter((e) => e.name.startsWith(`${name}.${kind}-`)).forEach((e) => kept.add(e.name));
    else kept.add(own);
  }
  const removed: string[] = [];
  for (const e of entries) {
    if (!e.isFile || !(temp.test(e.name) || (weights.test(e.name) && !kept.has(e.name)))) continue;
    try {
      Deno.removeSync(join(dir, e.name));
      removed.push(e.name);
    } catch { /* gone meanwhile */ }
  }
  return removed;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * The weights file that the sidecar at `path` names, when it is one this
 * run writes (`<run>.<kind>-<step>.safetensors`); null otherwise. Only
 * such a file is ever deleted as "the previous checkpoint": a damaged or
 * foreign sidecar must not make a save delete anything else.
 */
function ownWeightsOf(path: string, name: string, kind: "last" | "best"): string | null {
  try {
    const w = JSON.parse(Deno.readTextFileSync(path)).weights;
    return typeof w === "string" && w.startsWith(`${name}.${kind}-`) && /^\d+\.safetensors$/.test(w.slice(name.length + kind.length + 2))
      ? w
      : null;
  } catch {
    return null;
  }
}

/** The sidecar at `path`, checked; null when there is none. A damaged one is a one-line error. */
export function readSidecar(path: string): Sidecar | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`cannot read ${path}: ${firstLine(e)}`);
  }
  let s: Sidecar;
  try {
    s = JSON.parse(text);
  } catch {
    throw new Error(`${path} is not a checkpoint sidecar (bad JSON); delete it or pass --no-resume`);
  }
  if (s?.format !== FORMAT) throw new Error(`${path} is not a ${FORMAT} sidecar; delete it or pass --no-resume`);
  const why = sidecarProblem(s);
  if (why) throw new Error(`${path} is damaged: ${why}; restore it, or pass --no-resume to start afresh`);
  return s;
}

const isInt = (v: unknown, min: number) => Number.isInteger(v) && (v as number) >= min;
const isPositiveInt = (v: unknown) => isInt(v, 1);

/** What is wrong with a parsed sidecar, or null. */
export function sidecarProblem(s: Sidecar): string | null {
  const show = (v: unknown) => JSON.stringify(v) ?? String(v);
  const fields: [keyof Sidecar, (v: unknown) => boolean, string][] = [
    ["kind", (v) => v === "last" || v === "best", `"last" or "best"`],
    ["weights", (v) => typeof v === "string" && isPlainName(v) && v.endsWith(".safetensors"), "a .safetensors file name in the same folder"],
    ["sha256", (v) => v === undefined || (typeof v === "string" && /^[0-9a-f]{64}$/.test(v)), "64 hex digits"],
    ["epoch", isPositiveInt, "an integer >= 1"],
    ["batch", (v) => isInt(v, 0), "an integer >= 0"],
    ["step", (v) => isInt(v, 0), "an integer >= 0"],
    ["bestLoss", (v) => v === null || Number.isFinite(v), "a number or null"],
    ["sinceBest", (v) => isInt(v, 0), "an integer >= 0"],
    ["train", (v) => v === undefined || numbers(v, Number.isFinite), "an object of numbers"],
    ["logs", (v) => v === undefined || (numbers(v, (n) => isInt(n, 0)) && Object.keys(v as object).every(isPlainName)), "file names and lengths"],
    ["config", (v) => typeof v === "object" && v !== null && !Array.isArray(v), "the run's settings"],
    ["result", (v) => v === undefined || (typeof v === "object" && v !== null && !Array.isArray(v)), "the last epoch's means"],
  ];
  for (const [key, ok, what] of fields) {
    if (!ok(s[key])) return `${key} must be ${what}, not ${show(s[key])}`;
  }
  const c = s.config;
  const settings: [keyof Config, (v: unknown) => boolean, string][] = [
    ["method", isMethod, methodChoices()],
    ["arch", (v) => typeof v === "string", "a name"],
    ["representationSize", isPositiveInt, "an integer >= 1"],
    ["headLatentSize", isPositiveInt, "an integer >= 1"],
    ["imageSizeOverride", isPositiveInt, "an integer >= 1"],
    ["optimizer", (v) => typeof v === "string", "a name"],
  ];
  for (const [key, ok, what] of settings) {
    if (!ok(c[key])) return `config.${key} must be ${what}, not ${show(c[key])}`;
  }
  return null;
}

/** A name of a file directly in a folder: no separator, not "." or "..". */
function isPlainName(name: string): boolean {
  return name.length > 0 && name !== "." && name !== ".." && !/[/\\\0]/.test(name);
}

function numbers(v: unknown, ok: (n: unknown) => boolean): boolean {
  return typeof v === "object" && v !== null && !Array.isArray(v) && Object.values(v).every(ok);
}


/** Settings that shape the model: a checkpoint made with others cannot continue this run. */
const MODEL_KEYS: (keyof Config)[] = [
  "method",
  "arch",
  "smallStem",
  "baseWidth",
  "representationSize",
  "headLatentSize",
  "optimizer",
  "polyakEma",
  // Each method's own settings that shape its weights (METHODS).
  ...ownSettings().filter(([, o]) => o.shapesModel).map(([k]) => k),
];

/** Explains the first model-shaping setting where `cfg` contradicts the checkpoint, or null. */
export function contradiction(cfg: Config, saved: Config): string | null {
  for (const k of MODEL_KEYS) {
    const relevant = !foreignTo(cfg.method, k);
    // Sidecars written before --base-width existed hold torchvision's width.
    const was = k === "baseWidth" ? saved[k] ?? 64 : saved[k];
    if (relevant && was !== cfg[k]) {
      return `the checkpoint of this run was made with --${k.replace(/[A-Z]/g, (m) => "-" + m.toLowerCase())} ${was}, not ${cfg[k]}; pass --no-resume or a new --uid`;
    }
  }
  return null;
}

/**
 * Checks `bytes`, read from the weights file `path`, against the SHA-256
 * its sidecar recorded (none recorded: nothing to check).
 */
export function checkWeights(path: string, bytes: Uint8Array, sha256: string | undefined): void {
  if (!sha256) return;
  const got = createHash("sha256").update(bytes).digest("hex");
  if (got !== sha256) {
    throw new Error(`${path} is damaged: its SHA-256 is ${got}, the sidecar recorded ${sha256} (the file changed after it was saved); use another checkpoint`);
  }
}

/** Loads the weights the sidecar `s` in folder `dir` names, checking their checksum. */
export async function loadWeights(trainer: Trainer, dir: string, s: Sidecar): Promise<void> {
  await trainer.loadCheckpoint(join(dir, s.weights), s.sha256 ?? "");
}

/**
 * Restores checkpoint `s`, whose sidecar lies in `dir` (checked against
 * the run's settings by the caller, {@link contradiction}); returns its
 * position.
 */
export async function resume(trainer: Trainer, s: Sidecar, dir: string): Promise<Position> {
  await loadWeights(trainer, dir, s);
  const { epoch, batch, step, bestLoss, sinceBest } = s;
  return { epoch, batch, step, bestLoss, sinceBest };
}
