/**
 * Checkpoints: a JSON sidecar that names a weights file. The weights file
 * (native, safetensors: model, BYOL target, optimizer and Polyak state)
 * is written atomically under a step-numbered name; then the sidecar is
 * replaced atomically (temp, fsync, rename); then the old weights file is
 * removed. The sidecar's rename is the commit: a crash at any moment
 * leaves a sidecar that names a complete weights file.
 *
 * All randomness is keyed by (seed, epoch, position), so the position
 * (epoch, batch) and the step are the whole of the "RNG state".
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import type { Config } from "../cli/config.ts";
import type { Trainer } from "../ffi/native.ts";
import type { PassMetrics } from "./loop.ts";

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

export interface Sidecar extends Position {
  format: string;
  kind: "last" | "best";
  /** The weights file, beside the sidecar. */
  weights: string;
  savedAt: string;
  config: Config;
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

/** Writes `text` to `path` atomically: temp file, fsync, rename, fsync the folder. */
export async function writeFileAtomically(path: string, text: string): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${Deno.pid}`);
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    await f.write(new TextEncoder().encode(text));
    await f.sync();
  } finally {
    f.close();
  }
  await Deno.rename(tmp, path);
  try {
    const d = await Deno.open(dirname(path), { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* some file systems cannot sync a folder */ }
}

/** Saves a checkpoint of `kind`; returns the sidecar's path. */
export async function saveCheckpoint(
  trainer: Trainer,
  cfg: Config,
  kind: "last" | "best",
  pos: Position,
  result?: EpochResult,
): Promise<string> {
  await Deno.mkdir(cfg.modelDir, { recursive: true });
  const side = sidecarPath(cfg.modelDir, cfg.runName, kind);
  const previous = readSidecar(side);
  const weights = `${cfg.runName}.${kind}-${pos.step}.safetensors`;
  await trainer.saveCheckpoint(join(cfg.modelDir, weights));
  const s: Sidecar = { format: FORMAT, kind, weights, savedAt: new Date().toISOString(), ...pos, config: cfg, ...(result ? { result } : {}) };
  await writeFileAtomically(side, JSON.stringify(s, null, 1) + "\n");
  if (previous && previous.weights !== weights) {
    await Deno.remove(join(cfg.modelDir, previous.weights)).catch(() => {});
  }
  return side;
}

/** The sidecar at `path`, or null when there is none; a broken one is an error. */
export function readSidecar(path: string): Sidecar | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
  let s: Sidecar;
  try {
    s = JSON.parse(text);
  } catch {
    throw new Error(`${path} is not a checkpoint sidecar (bad JSON); delete it or pass --no-resume`);
  }
  if (s.format !== FORMAT) throw new Error(`${path} is not a ${FORMAT} sidecar; delete it or pass --no-resume`);
  return s;
}

/** Settings that shape the model: a checkpoint made with others cannot continue this run. */
const MODEL_KEYS: (keyof Config)[] = [
  "method",
  "arch",
  "smallStem",
  "baseWidth",
  "representationSize",
  "headLatentSize",
  "nceSize",
  "projectionSize",
  "optimizer",
  "polyakEma",
];

/** Explains the first model-shaping setting where `cfg` contradicts the checkpoint, or null. */
export function contradiction(cfg: Config, saved: Config): string | null {
  for (const k of MODEL_KEYS) {
    const relevant = !((k === "nceSize" && cfg.method === "byol") || (k === "projectionSize" && cfg.method === "simclr"));
    // Sidecars written before --base-width existed hold torchvision's width.
    const was = k === "baseWidth" ? saved[k] ?? 64 : saved[k];
    if (relevant && was !== cfg[k]) {
      return `the checkpoint of this run was made with --${k.replace(/[A-Z]/g, (m) => "-" + m.toLowerCase())} ${was}, not ${cfg[k]}; pass --no-resume or a new --uid`;
    }
  }
  return null;
}

/** Restores the checkpoint at `side` (default: this run's `last`), if any; returns its position. */
export async function resume(trainer: Trainer, cfg: Config, side = sidecarPath(cfg.modelDir, cfg.runName, "last")): Promise<Position | null> {
  const s = readSidecar(side);
  if (!s) return null;
  const why = contradiction(cfg, s.config);
  if (why) throw new Error(why);
  await trainer.loadCheckpoint(join(dirname(side), s.weights));
  const { epoch, batch, step, bestLoss, sinceBest } = s;
  return { epoch, batch, step, bestLoss, sinceBest };
}
