/** Shared bits of the tests/run_*_test.ts files: tiny training runs through the CLI. */
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";

/** The CLI's entry point, for tests that spawn it themselves. */
export const MAIN = join(import.meta.dirname!, "..", "cli", "main.ts");

/**
 * A SimCLR run small enough for a test: ResNet-18 at an eighth of the
 * width, 32 px, 80 training images in batches of 16 (5 steps an epoch),
 * one thread (several spin against each other on a loaded 2-core machine).
 */
export function tinyArgs(dir: string, extra: string[] = []): string[] {
  return [
    "train", "--data-dir", join(dir, "data"), "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs"),
    "--uid", "tiny", "--num-replicas", "1", "--arch", "resnet18", "--base-width", "8", "--representation-size", "64",
    "--head-latent-size", "16", "--nce-size", "16", "--image-size-override", "32", "--batch-size", "16",
    "--epochs", "2", "--warmup", "1", "--optimizer", "momentum", "--lr", "0.05", "--seed", "3",
    "--workers-per-replica", "1", "--threads", "1", ...extra,
  ];
}

/** Writes the tiny run's data set into `<dir>/data`. */
export async function tinyData(dir: string): Promise<void> {
  await writeDemoDataset(join(dir, "data"), { trainPerClass: 8, testPerClass: 2 });
}

/** Runs the CLI with `args`; the environment is this one's plus `env`. */
export async function cli(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, signal: out.signal, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

/** The run name `args` give (from --print-config). */
export async function runNameOf(args: string[]): Promise<string> {
  return JSON.parse((await cli([...args, "--print-config"])).stdout).runName;
}

/** Names of the files in `dir` (none when it does not exist). */
export function filesIn(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** The lines of a metrics.jsonl without their wall-clock `time`. */
export function metricsWithoutTime(path: string): { tag: string; step: number; value: number | null }[] {
  return Deno.readTextFileSync(path).trim().split("\n").map((l) => {
    const { tag, step, value } = JSON.parse(l);
    // Stage timings (time_*) are wall-clock figures too: their points must be there, their values differ.
    return { tag, step, value: tag.startsWith("time_") ? null : value };
  });
}

/** Whether `unshare -rm` can give a test its own mounts (a user namespace), and why not. */
export function privateMountsUnavailable(): string | null {
  try {
    const r = new Deno.Command("unshare", { args: ["-rm", "sh", "-c", "mount -t tmpfs -o size=64k none /mnt"], stderr: "piped" })
      .outputSync();
    return r.success ? null : `unshare -rm with a tmpfs mount failed: ${new TextDecoder().decode(r.stderr).trim().split("\n")[0]}`;
  } catch (e) {
    return `unshare is not available: ${(e as Error).message}`;
  }
}

/** Reads `reader` until what it gave matches `pattern`; throws if the stream ends first. */
export async function readUntil(reader: ReadableStreamDefaultReader<string>, pattern: RegExp): Promise<string> {
  let seen = "";
  while (!pattern.test(seen)) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`the output ended before ${pattern}: ${seen.slice(-300)}`);
    seen += value;
  }
  return seen;
}

/** Polls `ready` every 50 ms; throws after `seconds`. */
export async function waitFor(ready: () => boolean, what: string, seconds = 300): Promise<void> {
  const deadline = Date.now() + seconds * 1000;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what} after ${seconds} s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
