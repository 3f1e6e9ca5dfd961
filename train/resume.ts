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

/** A checkpoint given by path: its sidecar and where that is, the weights file meant, and the checksum that applies to it. */
export interface GivenCheckpoint {
  side: Sidecar;
  sidePath: string;
  file: string;
  sha256: string | undefined;
}

/**
 * A checkpoint given as its sidecar (.json: the weights file it names) or
 * as a weights file (`<run>.<kind>-<step>.safetensors`: exactly that file,
 * with the settings of its run's sidecar). The checksum applies when the
 * sidecar names the file. A missing sidecar is a one-line error.
 */
export function checkpointOf(path: string): GivenCheckpoint {
  const weightsGiven = path.endsWith(".safetensors");
  const sidePath = weightsGiven ? path.replace(/-\d+\.safetensors$/, ".json") : path;
  const side = sidePath === path && weightsGiven ? null : readSidecar(sidePath);
  if (!side) {
    throw new ConfigError(
      weightsGiven
        ? `no sidecar ${sidePath} beside ${path}: a weights file needs its run's <run>.<kind>.json for the settings`
        : `no checkpoint at ${path} (expected a <run>.last.json or .best.json sidecar)`,
    );
  }
  const file = weightsGiven ? path : join(dirname(sidePath), side.weights);
  return { side, sidePath, file, sha256: basename(file) === side.weights ? side.sha256 : undefined };
}

/** The checkpoint `cfg` continues from, or null for a fresh start. */
export function findCheckpoint(cfg: Config, resumeFrom?: string): Found | null {
  if (resumeFrom) {
    const { side, sidePath, file } = checkpointOf(resumeFrom);
    // Only the sidecar knows a weights file's epoch, step and logs, and only of the one it names.
    if (basename(file) !== side.weights) {
      throw new ConfigError(
        `${resumeFrom} is not the weights file its sidecar ${sidePath} names (${side.weights}): its epoch and step are unknown; resume from that sidecar, or score the file with selfsup eval --checkpoint ${resumeFrom}`,
      );
    }
    // The same run (other epochs at most) goes on under its name; other settings make a new run from there.
    const runName = sameIdentity(side.config, cfg) ? side.config.runName : cfg.runName;
    return { path: sidePath, side, runName };
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
