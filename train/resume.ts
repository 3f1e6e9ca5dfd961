/**
 * Which checkpoint a run continues from, and what a user is told about
 * it: `--resume PATH`; else this run's own last checkpoint; else the last
 * checkpoint of the same run made with another `--epochs` (a name built
 * with `--uid` spells the epochs; {@link runIdentity} leaves them out), so
 * raising `--epochs` continues a run under its name instead of starting a
 * new one. A run that has done all its epochs is finished.
 *
 * @module
 */
import { basename, dirname, join } from "node:path";
import { type Config, ConfigError } from "./config.ts";
import { runIdentity } from "./runname.ts";
import { readSidecar, type Sidecar, sidecarPath } from "./checkpoint.ts";

/** A checkpoint to continue from: its sidecar, where that is, and the run it belongs to. */
export interface Found {
  path: string;
  side: Sidecar;
  /** The run name to continue under. */
  runName: string;
}

/** The sidecar path of a checkpoint given as its .json or its weights file (`<run>.<kind>-<step>.safetensors`). */
export function sidecarFile(path: string): string {
  return path.endsWith(".safetensors") ? path.replace(/-\d+\.safetensors$/, ".json") : path;
}

/** The sidecar of a checkpoint given as its .json or weights file; a missing one is a one-line error. */
export function sidecarOf(path: string): Sidecar & { dir: string } {
  const side = sidecarFile(path);
  const s = readSidecar(side);
  if (!s) throw new ConfigError(`no checkpoint at ${path} (expected a <run>.last.json or .best.json sidecar)`);
  return { ...s, dir: dirname(side) };
}

/** The checkpoint `cfg` continues from, or null for a fresh start. */
export function findCheckpoint(cfg: Config, resumeFrom?: string): Found | null {
  if (resumeFrom) {
    const side = sidecarOf(resumeFrom);
    // The same run (other epochs at most) goes on under its name; other settings make a new run from there.
    const runName = sameIdentity(side.config, cfg) ? side.config.runName : cfg.runName;
    return { path: sidecarFile(resumeFrom), side, runName };
  }
  if (cfg.noResume) return null;
  const own = sidecarPath(cfg.modelDir, cfg.runName, "last");
  const side = readSidecar(own);
  if (side) return { path: own, side, runName: cfg.runName };
  return sameRun(cfg);
}

/** The newest last checkpoint in --model-dir of the run `cfg` continues with other --epochs, or null. */
function sameRun(cfg: Config): Found | null {
  let names: string[];
  try {
    names = [...Deno.readDirSync(cfg.modelDir)].map((e) => e.name).filter((n) => n.endsWith(".last.json"));
  } catch {
    return null;
  }
  let best: Found | null = null;
  for (const name of names) {
    let side: Sidecar | null;
    try {
      side = readSidecar(join(cfg.modelDir, name));
    } catch {
      continue; // someone else's broken file is not this run's
    }
    const c = side?.config;
    if (!side || !c || !sameIdentity(c, cfg)) continue;
    if (!best || side.savedAt > best.side.savedAt) {
      best = { path: join(cfg.modelDir, name), side, runName: c.runName ?? basename(name, ".last.json") };
    }
  }
  return best;
}

/** Whether `saved` and `cfg` describe the same run, perhaps with other --epochs. */
function sameIdentity(saved: Config, cfg: Config): boolean {
  return saved.uid === cfg.uid && saved.dataDir === cfg.dataDir && runIdentity(saved) === runIdentity(cfg);
}

/** The line saying which checkpoint a run continues from (and that --epochs changed, if so). */
export function continuingLine(f: Found, cfg: Config): string {
  const { epoch, batch, step } = f.side;
  const before = f.side.config?.epochs;
  const epochs = before !== undefined && before !== cfg.epochs ? ` (--epochs ${before} before, now ${cfg.epochs})` : "";
  return `resumed ${f.runName} at epoch ${epoch}, batch ${batch} (step ${step}) from ${f.path}${epochs}`;
}

/** A run is finished when its checkpoint's next epoch lies beyond --epochs. */
export function finished(f: Found, cfg: Config): boolean {
  return f.side.epoch > cfg.epochs;
}
