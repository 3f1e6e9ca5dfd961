/** Shared bits of the Deno tests. */
import { join } from "node:path";
import { DEFAULTS, defaultsOf } from "../cli/config.ts";
import type { Method } from "../train/config.ts";
import type { LoaderConfig, TrainerConfig } from "../ffi/native.ts";

/** A fresh temporary folder, removed by `using`. */
export function tempDir(prefix = "selfsup-test-"): { path: string } & Disposable {
  const path = Deno.makeTempDirSync({ prefix });
  return { path, [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }) };
}

/** The Python that imports the torch selfsup links (set by scripts/bootstrap.sh). */
export const python = Deno.env.get("SELFSUP_PYTHON") || "";

/** Runs a Python script of tests/python; throws with its stderr on failure. */
export async function runPython(script: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(python, {
    args: [join(import.meta.dirname!, "python", script), ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${script} failed: ${err}`);
  return new TextDecoder().decode(out.stdout);
}

/** `train` on `data` with its models and logs under `dir`, one replica on the CPU, run name prefix `uid`. */
export function trainArgs(dir: string, data: string, uid: string): string[] {
  return [
    "train",
    "--data-dir",
    data,
    "--model-dir",
    join(dir, "models"),
    "--log-dir",
    join(dir, "runs"),
    "--uid",
    uid,
    "--num-replicas",
    "1",
    "--no-cuda",
  ];
}

/** Runs the selfsup CLI as a subprocess (same environment, plus `env`; in `cwd` when given). */
export async function runCli(
  args: string[],
  env: Record<string, string> = {},
  cwd?: string,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", join(import.meta.dirname!, "..", "cli", "main.ts"), ...args],
    env,
    cwd,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** Every file under `dir`, relative path → bytes. */
export function readTree(dir: string, base = dir, out = new Map<string, Uint8Array>()): Map<string, Uint8Array> {
  for (const e of Deno.readDirSync(dir)) {
    const p = join(dir, e.name);
    if (e.isDirectory) readTree(p, base, out);
    else out.set(p.slice(base.length), Deno.readFileSync(p));
  }
  return out;
}

/**
 * A trainer's whole configuration for a test that builds one directly:
 * the defaults of `over.method` (simclr when not given) as the command line
 * resolves them (cli/config.ts DEFAULTS, METHODS), seed 0, with `over` on top.
 * The native side has no defaults, so a test names only what it changes.
 */
export function trainerConfig(over: Partial<TrainerConfig> & Pick<TrainerConfig, "numClasses">): TrainerConfig {
  return { ...defaultsOf((over.method ?? DEFAULTS.method) as Method), seed: 0, ...over };
}

/** A loader's configuration for a test: the run's augmentation defaults (cli/config.ts DEFAULTS) with `over` on top. */
export function loaderConfig(over: Omit<LoaderConfig, "colorJitterStrength" | "blurProb" | "solarizeProb"> & Partial<LoaderConfig>): LoaderConfig {
  const { colorJitterStrength, blurProb, solarizeProb } = DEFAULTS;
  return { colorJitterStrength, blurProb, solarizeProb, ...over };
}
