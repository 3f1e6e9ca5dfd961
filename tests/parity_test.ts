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
