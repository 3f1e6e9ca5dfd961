/**
 * Learning-rate schedules, computed per step.
 *
 * The reference programs step warmup and cosine once per epoch and train
 * the whole first epoch at lr 0 (REFERENCE.md §2.9, defect 12); the
 * SimCLR and BYOL papers step per iteration, which selfsup does.
 *
 * @module
 */

/** The reference's LR scaling: lr × global batch / 256 for SGD-type optimizers. */
export function scaledLr(lr: number, optimizer: string, globalBatch: number): number {
  const full = optimizer.trim().toLowerCase();
  const base = full.includes("lars") ? full.split("_").at(-1)! : full;
  return base === "sgd" || base === "momentum" ? lr * globalBatch / 256 : lr;
}

export interface Schedule {
  /** Peak learning rate (after scaling). */
  base: number;
  /** Warmup length in steps (0: none). */
  warmupSteps: number;
  /** Total steps of the run. */
  totalSteps: number;
  kind: "cosine" | "fixed";
}

/**
 * LR of step `k` (0-based): linear warmup reaching `base` at the end of
 * the warmup, then cosine decay towards 0 at `totalSteps` (or constant).
 */
export function lrAt(s: Schedule, k: number): number {
  if (k < s.warmupSteps) return s.base * (k + 1) / s.warmupSteps;
  if (s.kind === "fixed") return s.base;
  const span = Math.max(1, s.totalSteps - s.warmupSteps);
  const t = Math.min(1, (k - s.warmupSteps) / span);
  return s.base * 0.5 * (1 + Math.cos(Math.PI * t));
}

/**
 * BYOL's target decay at step `k` of `total` (Grill et al. 2020, §3.2):
 * τ = 1 − (1 − τ_base)·(cos(πk/K) + 1)/2, from τ_base up to 1, per step
 * (the reference kept the step count out of its checkpoints). MoCo v3's
 * momentum follows the same curve (`--moco-m-cos`).
 */
export function byolTau(base: number, k: number, total: number): number {
  const t = Math.min(k, total) / Math.max(1, total);
  return 1 - (1 - base) * (Math.cos(Math.PI * t) + 1) / 2;
}
