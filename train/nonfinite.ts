/**
 * The stop on inf/NaN: every step reports, on the device, whether any
 * weight, buffer, BYOL target weight or optimizer state became non-finite
 * (on any replica: the flag travels in the all-reduced metrics, so all
 * replicas stop after the same step); the loop reads it with the step's
 * metrics and ends the run with one line saying where, what, which
 * checkpoint is the last good one, and what to try. No checkpoint is
 * written after it (the native writer refuses non-finite tensors too).
 *
 * @module
 */
import type { StepRow } from "../ffi/native.ts";

/** The run met inf/NaN; the message is the whole story, in one line. */
export class NonFiniteError extends Error {
  override name = "NonFiniteError";
}

/**
 * Whether a step ends the run: non-finite weights or state, or a
 * non-finite loss on a step the loss scaler did not skip (a skipped fp16
 * step changed nothing, as with torch's GradScaler).
 */
export function stopsTheRun(row: Pick<StepRow, "loss" | "nonFinite" | "skipped">): boolean {
  return row.nonFinite || (!Number.isFinite(row.loss) && !row.skipped);
}

/** The last checkpoint written before the failure, if any. */
export interface GoodCheckpoint {
  path: string;
  step: number;
}

/**
 * The one-line explanation: epoch and step (1-based) of the step that
 * went wrong, what was non-finite, the last good checkpoint, and a hint
 * that depends on the cause: with fp16/bf16 the first suspect is the
 * precision, with fp32 the learning rate.
 */
export function nonFiniteMessage(
  at: { epoch: number; step: number },
  row: Pick<StepRow, "loss" | "nonFinite">,
  precision: string,
  good: GoodCheckpoint | null,
): string {
  const what = row.nonFinite
    ? `weights or optimizer state became inf/NaN (the step's loss was ${row.loss})`
    : `the loss became ${row.loss}`;
  const kept = good
    ? `nothing was saved after it; the last good checkpoint is ${good.path} (step ${good.step}), which the same command resumes from`
    : "no checkpoint had been written yet";
  const hint = precision === "fp32"
    ? "lower --lr (or clip with --clip)"
    : `it ran in --precision ${precision}: rerun with --precision fp32 to tell a precision problem from a learning-rate one, and lower --lr only if fp32 fails too`;
  return `training stopped at epoch ${at.epoch}, step ${at.step}: ${what}; ${kept}; ${hint}`;
}
