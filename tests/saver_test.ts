import assert from "node:assert/strict";
import { BestSaver } from "../train/saver.ts";

Deno.test("best model selection waits for the burn-in of int(0.1 · epochs), then keeps the lowest test loss", () => {
  const s = new BestSaver(100, false);
  assert.equal(s.burnIn, 10);
  assert.deepEqual(s.observe(9, 0.1), { best: false, stop: false }, "nothing counts before loop epoch 10");
  assert.equal(s.bestLoss, null);
  assert.deepEqual(s.observe(10, 5), { best: true, stop: false });
  assert.deepEqual(s.observe(11, 6), { best: false, stop: false });
  assert.deepEqual(s.observe(12, 4), { best: true, stop: false });
  assert.equal(s.bestLoss, 4);
  // without --early-stop it never stops
  for (let e = 13; e < 40; e++) assert.equal(s.observe(e, 9).stop, false);
});

Deno.test("--early-stop ends the run after 11 epochs in a row without a better test loss", () => {
  const s = new BestSaver(20, true);
  assert.equal(s.observe(2, 1.0).best, true);
  for (let i = 1; i <= 10; i++) assert.equal(s.observe(2 + i, 2.0).stop, false, `epoch ${2 + i}`);
  assert.equal(s.observe(13, 2.0).stop, true);
  // a resumed saver continues its count
  const r = new BestSaver(20, true, 1.0, 10);
  assert.equal(r.observe(13, 1.5).stop, true);
  assert.equal(new BestSaver(20, true, 1.0, 10).observe(13, 0.5).stop, false);
});
