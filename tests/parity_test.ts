/**
 * SimCLR parity with PyTorch on the same libtorch: selfsup's initial
 * weights are loaded into torchvision's resnet18 plus the reference head
 * and classifier (tests/python/simclr_reference.py), both compute the loss
 * and gradients for the same batch, and every gradient must agree.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Trainer } from "../ffi/native.ts";
import { python, runPython, tempDir, trainerConfig } from "./helpers.ts";

const TOLERANCE = 1e-5;
const BEFORE_BN = ["grad.head.0.bias", "grad.head.3.bias"];

// Both memory layouts: channels_last (the default) changes the
// convolutions' summation order, so PyTorch runs the same layout.
for (const [tau, channelsLast] of [[0.1, true], [0.5, false]] as const) {
  Deno.test({
    name: `SimCLR loss and gradients match PyTorch (resnet18, tau ${tau}, ${channelsLast ? "channels_last" : "contiguous"})`,
    ignore: python === "",
    async fn() {
      using dir = tempDir();
      const f = (n: string) => join(dir.path, n);
      using trainer = await Trainer.create(trainerConfig({
        device: "cpu",
        arch: "resnet18",
        representationSize: 512,
        headLatentSize: 128,
        nceSize: 64,
        nceTemperature: tau,
        numClasses: 7,
        optimizer: "lars_momentum",
        weightDecay: 1e-6,
        seed: 11,
        channelsLast,
      }));
      await trainer.saveWeights(f("weights.safetensors"));
      await runPython("simclr_reference.py", [
        "make",
        f("weights.safetensors"),
        f("inputs.safetensors"),
        f("reference.safetensors"),
        String(tau),
        channelsLast ? "channels_last" : "contiguous",
      ]);
      await trainer.debugGradients(f("inputs.safetensors"), f("native.safetensors"));
      const report = JSON.parse(
        await runPython("simclr_reference.py", ["compare", f("reference.safetensors"), f("native.safetensors")]),
      ) as { errors: Record<string, { rel: number; abs: number; scale: number }>; unmatched: string[] };
      assert.deepEqual(report.unmatched, [], "the same tensors on both sides");
      for (const key of ["loss", "ssl_loss", "linear_loss", "grad.backbone.conv1.weight", "grad.head.0.weight", "grad.head.4.bias"]) {
        assert.ok(key in report.errors, `${key} compared`);
      }
      // A bias right before BatchNorm has zero gradient in exact arithmetic
      // (BN removes any constant shift): both sides hold rounding noise
      // there, so check that it is noise and compare everything else.
      for (const k of BEFORE_BN) {
        assert.ok(report.errors[k].scale < 1e-6 && report.errors[k].abs < 1e-6, `${k} is ~0 on both sides`);
      }
      const worst = Object.entries(report.errors).filter(([k, e]) => !BEFORE_BN.includes(k) && !(e.rel <= TOLERANCE));
      assert.deepEqual(worst, [], `relative error above ${TOLERANCE}`);
    },
  });
}

// MoCo v3: one whole step against PyTorch (tests/python/mocov3_reference.py:
// torchvision's resnet18, the authors' MLPs and LARS), in float64 so that
// every difference is summation order: the loss, every gradient, then
// every weight and buffer after LARS and the momentum update, the
// momentum encoder's included.
Deno.test({
  name: "MoCo v3: one training step (loss, gradients, LARS, momentum encoder) matches PyTorch in float64",
  ignore: python === "",
  async fn() {
    using dir = tempDir();
    const f = (n: string) => join(dir.path, n);
    const [lr, m, wd, tau] = [0.5, 0.9, 1e-3, 0.2];
    using trainer = await Trainer.create(trainerConfig({
      method: "mocov3",
      device: "cpu",
      arch: "resnet18",
      representationSize: 512,
      headLatentSize: 24,
      projectionSize: 8,
      nceTemperature: tau,
      numClasses: 5,
      optimizer: "lars_momentum",
      weightDecay: wd,
      seed: 13,
      float64: true,
    }));
    // The initial weights, the views it draws, its gradients, its weights after the step.
    const made = ["weights", "inputs", "grads", "after"].map((n) => f(`${n}.safetensors`));
    await trainer.saveWeights(made[0]);
    await runPython("mocov3_reference.py", ["make", ...made, ...[lr, m, wd, tau].map(String)]);
    await trainer.debugGradients(f("inputs.safetensors"), f("native-grads.safetensors"));
    await trainer.saveWeights(f("native-after.safetensors"));
    type Report = { errors: Record<string, { rel: number; abs: number; scale: number }>; unmatched: string[] };
    const compare = async (ref: string, nat: string) =>
      JSON.parse(await runPython("mocov3_reference.py", ["compare", f(ref), f(nat)])) as Report;
    const grads = await compare("grads.safetensors", "native-grads.safetensors");
    const after = await compare("after.safetensors", "native-after.safetensors");
    assert.deepEqual(grads.unmatched, [], "the same gradients on both sides");
    assert.deepEqual(after.unmatched, [], "the same weights and buffers on both sides");
    for (const k of ["loss", "ssl_loss", "grad.backbone.conv1.weight", "grad.head.0.weight", "grad.predictor.3.weight"]) {
      assert.ok(k in grads.errors, `${k} compared`);
    }
    for (const k of ["target.backbone.conv1.weight", "target.head.4.running_var", "predictor.3.weight", "backbone.layer4.1.bn2.running_mean"]) {
      assert.ok(k in after.errors, `${k} compared`);
    }
    // The step moved the weights and the momentum encoder followed.
    const w = await compare("weights.safetensors", "after.safetensors");
    assert.ok(w.errors["target.head.0.weight"].rel > 1e-6 && w.errors["backbone.conv1.weight"].rel > 1e-6, "the step changes weights");
    const tol = 1e-9;
    const bad = [...Object.entries(grads.errors), ...Object.entries(after.errors)].filter(([, e]) => !(e.rel <= tol || e.abs <= 1e-12));
    assert.deepEqual(bad, [], `relative error above ${tol}`);
  },
});
