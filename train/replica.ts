/**
 * Where this replica runs: its device and its CPU threads, from its place
 * among the replicas (train/config.ts `Config`) and the environment.
 *
 * @module
 */
import type { Config } from "./config.ts";

export type Env = Record<string, string | undefined>;

/** A bad launch: said in one line, like a bad flag. */
export class LaunchError extends Error {
  override name = "LaunchError";
}

/** An integer environment variable; undefined when unset or empty, a LaunchError when not a number. */
export function envInt(env: Env, name: string): number | undefined {
  const v = env[name];
  if (v === undefined || v.trim() === "") return undefined;
  if (!/^\d+$/.test(v.trim())) throw new LaunchError(`${name}=${v} is not a non-negative integer`);
  return Number(v);
}

/**
 * CPU threads for one replica: SLURM's `--cpus-per-task`, else this
 * machine's cores shared by the replicas on it; 0 (libtorch's default,
 * all cores) for a single replica or on a GPU.
 */
export function threadsPerReplica(
  launch: Pick<Config, "localWorldSize">,
  env: Env,
  cores = navigator.hardwareConcurrency,
): number {
  const perTask = envInt(env, "SLURM_CPUS_PER_TASK");
  if (perTask !== undefined && perTask > 0) return perTask;
  return launch.localWorldSize > 1 ? Math.max(1, Math.floor(cores / launch.localWorldSize)) : 0;
}

/** What the native library reports about the GPUs this process sees. */
export interface Gpus {
  cuda: boolean;
  cudaDevices: number;
}

/**
 * This replica's device: the CPU with `--no-cuda` or without a GPU, the
 * GPU for a single replica, else its local rank's GPU modulo the GPUs it
 * sees (so one GPU per task through `CUDA_VISIBLE_DEVICES`, as SLURM's
 * `--gpus-per-task` sets it, works too).
 *
 * Replicas started together with one environment (`selfsup launch`,
 * torchrun) that outnumber the GPUs would put two on one GPU, which NCCL
 * refuses with an obscure "invalid usage". That is a one-line error here,
 * before any rendezvous. Falling back to Gloo on the CPU instead would turn
 * a GPU run into a CPU run many times slower, which a warning hides too
 * easily; `--no-cuda` asks for it explicitly. Where selfsup cannot tell
 * (SLURM, ranks started by hand), NCCL's refusal is explained the same way
 * (native/src/dist/faults.rs).
 */
export function replicaDevice(
  cfg: Pick<Config, "worldSize" | "localRank" | "localWorldSize" | "launchedBy" | "noCuda">,
  gpus: Gpus,
): "cpu" | "cuda" | `cuda:${number}` {
  if (cfg.noCuda || !gpus.cuda || gpus.cudaDevices < 1) return "cpu";
  if (cfg.worldSize === 1) return "cuda";
  const shared = cfg.launchedBy === "torchrun" && cfg.localWorldSize > gpus.cudaDevices;
  if (shared) {
    const n = gpus.cudaDevices;
    const gpuCount = `${n} GPU${n === 1 ? "" : "s"}`;
    throw new LaunchError(
      `${cfg.localWorldSize} replicas on this machine, ${gpuCount}: NCCL needs one GPU per replica; ` +
        `start at most ${n} (--nproc, --nproc-per-node) or train them on the CPU with Gloo (--no-cuda)`,
    );
  }
  return `cuda:${cfg.localRank % gpus.cudaDevices}`;
}
