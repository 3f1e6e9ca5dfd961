/**
 * The accuracy benchmark's PyTorch side (bench/accuracy/reference.py) must
 * build the network selfsup builds: torchvision's ResNet-18 at base width
 * 64, channel counts scaled alike under --base-width (selfsup's own scaling
 * is checked in native/tests/model_test.rs).
 */
import assert from "node:assert/strict";
import { python, runPython } from "./helpers.ts";

Deno.test({
  name: "accuracy reference: its ResNet-18 is torchvision's and scales with --base-width like selfsup's",
  ignore: !python,
  fn: async () => {
    const r = JSON.parse(await runPython("accuracy_mirror.py", []));
    assert.equal(r.same_names, true);
    assert.equal(r.same_shapes, true);
    assert.ok(r.max_diff < 1e-5, `outputs differ by ${r.max_diff}`);
    assert.equal(r.scaled, true);
    assert.equal(r.features, 128);
  },
});
