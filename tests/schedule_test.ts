import assert from "node:assert/strict";
import { lrAt, scaledLr } from "../train/schedule.ts";

Deno.test("lr is scaled by global batch / 256 for SGD-type optimizers only", () => {
  assert.equal(scaledLr(0.3, "lars_momentum", 4096), 0.3 * 16);
  assert.equal(scaledLr(0.2, "sgd", 512), 0.4);
  assert.equal(scaledLr(0.3, "lars_sgd", 256), 0.3);
  assert.equal(scaledLr(1e-3, "adam", 4096), 1e-3);
});

Deno.test("warmup rises linearly per step, cosine falls to zero", () => {
  const s = { base: 2, warmupSteps: 10, totalSteps: 110, kind: "cosine" as const };
  assert.equal(lrAt(s, 0), 0.2); // never 0, unlike the reference's first epoch
  assert.equal(lrAt(s, 9), 2);
  assert.equal(lrAt(s, 10), 2);
  assert.ok(Math.abs(lrAt(s, 60) - 1) < 1e-12); // half-way through the cosine
  assert.ok(lrAt(s, 109) > 0 && lrAt(s, 109) < 2e-3);
  assert.equal(lrAt({ ...s, kind: "fixed" }, 100), 2);
  assert.equal(lrAt({ ...s, warmupSteps: 0 }, 0), 2);
});
