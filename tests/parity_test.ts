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

// One whole training step against PyTorch (tests/python/step_reference.py:
// torchvision's resnet18, the authors' heads and LARS), in float64 so that
// every difference is summation order: the loss, every gradient, then
// every weight and buffer after LARS (and MoCo v3's momentum update, its
// momentum encoder included).
const STEPS = [
  {
    method: "mocov3",
    config: { headLatentSize: 24, projectionSize: 8, nceTemperature: 0.2 },
    momentum: 0.9,
    grads: ["grad.predictor.3.weight"],
    after: ["target.backbone.conv1.weight", "target.head.4.running_var", "predictor.3.weight"],
  },
  {
    method: "barlowtwins",
    config: { headLatentSize: 24, projectorWidths: "32-32-16", offDiagonalWeight: 0.01 },
    grads: ["grad.head.6.weight"],
    after: ["head.6.weight", "head.4.running_var"],
  },
  {
    method: "vicreg",
    config: { headLatentSize: 24, projectorWidths: "32-16", invarianceWeight: 2, varianceWeight: 7, covarianceWeight: 0.5 },
    grads: ["grad.head.3.weight", "grad.head.0.bias"],
    after: ["head.3.weight", "head.0.bias", "head.1.running_mean"],
  },
] as const;

for (const { method, config, grads: gradKeys, after: afterKeys, ...step } of STEPS) {
  const momentum = "momentum" in step ? step.momentum : undefined;
  Deno.test({
    name: `${method}: one training step (loss, gradients, LARS${momentum ? ", momentum encoder" : ""}) matches PyTorch in float64`,
    ignore: python === "",
    async fn() {
      using dir = tempDir();
      const f = (n: string) => join(dir.path, n);
      const weightDecay = 1e-3;
      using trainer = await Trainer.create(trainerConfig({
        method,
        ...config,
        weightDecay,
        device: "cpu",
        arch: "resnet18",
        representationSize: 512,
        numClasses: 5,
        optimizer: "lars_momentum",
        seed: 13,
        float64: true,
      }));
      // The initial weights, the views it draws, its gradients, its weights after the step.
      const made = ["weights", "inputs", "grads", "after"].map((n) => f(`${n}.safetensors`));
      await trainer.saveWeights(made[0]);
      const settings = { method, lr: 0.5, weightDecay, ...config, ...(momentum ? { momentum } : {}) };
      await runPython("step_reference.py", ["make", ...made, JSON.stringify(settings)]);
      await trainer.debugGradients(f("inputs.safetensors"), f("native-grads.safetensors"));
      await trainer.saveWeights(f("native-after.safetensors"));
      type Report = { errors: Record<string, { rel: number; abs: number; scale: number }>; unmatched: string[] };
      const compare = async (ref: string, nat: string) =>
        JSON.parse(await runPython("step_reference.py", ["compare", f(ref), f(nat)])) as Report;
      const grads = await compare("grads.safetensors", "native-grads.safetensors");
      const after = await compare("after.safetensors", "native-after.safetensors");
      assert.deepEqual(grads.unmatched, [], "the same gradients on both sides");
      assert.deepEqual(after.unmatched, [], "the same weights and buffers on both sides");
      for (const k of ["loss", "ssl_loss", "linear_loss", "grad.backbone.conv1.weight", "grad.head.0.weight", ...gradKeys]) {
        assert.ok(k in grads.errors, `${k} compared`);
      }
      for (const k of ["backbone.layer4.1.bn2.running_mean", "linear_classifier.weight", ...afterKeys]) assert.ok(k in after.errors, `${k} compared`);
      // The step moved the weights (and the momentum encoder followed).
      const moved = await compare("weights.safetensors", "after.safetensors");
      for (const k of ["backbone.conv1.weight", "head.0.weight", ...(momentum ? ["target.head.0.weight"] : [])]) {
        assert.ok(moved.errors[k].rel > 1e-6, `the step changes ${k}`);
      }
      // A bias right before BatchNorm (VICReg's hidden ones) has zero
      // gradient in exact arithmetic: both sides hold rounding noise of
      // ~1e-17 there, which the absolute bound lets through.
      const tol = 1e-9;
      const bad = [...Object.entries(grads.errors), ...Object.entries(after.errors)].filter(([, e]) => !(e.rel <= tol || e.abs <= 1e-12));
      assert.deepEqual(bad, [], `relative error above ${tol}`);
    },
  });
}

// VICReg through the whole model: torchvision's resnet18 and the authors'
// expander (biases before BatchNorm, none on the last Linear) from the same
// initial weights, the loss of methods_reference.py, in float32 at the
// default layout and the paper's weights (the float64 step above uses
// others).
{
  const [widths, weights] = ["64-64-32", [25, 25, 1]] as const;
  Deno.test({
    name: `VICReg loss and gradients match PyTorch (resnet18, expander ${widths}, weights ${weights.join("/")})`,
    ignore: python === "",
    async fn() {
      using dir = tempDir();
      const f = (n: string) => join(dir.path, n);
      const [invarianceWeight, varianceWeight, covarianceWeight] = weights;
      using trainer = await Trainer.create(trainerConfig({
        method: "vicreg",
        device: "cpu",
        arch: "resnet18",
        representationSize: 512,
        headLatentSize: 32,
        projectorWidths: widths,
        invarianceWeight,
        varianceWeight,
        covarianceWeight,
        numClasses: 5,
        optimizer: "lars_momentum",
        weightDecay: 1e-6,
        seed: 12,
      }));
      await trainer.saveWeights(f("weights.safetensors"));
      const py = (args: string[]) => runPython("vicreg_reference.py", args);
      await py(["make", f("weights.safetensors"), f("inputs.safetensors"), f("reference.safetensors"), widths, ...weights.map(String), "channels_last"]);
      await trainer.debugGradients(f("inputs.safetensors"), f("native.safetensors"));
      const report = JSON.parse(await py(["compare", f("reference.safetensors"), f("native.safetensors")])) as {
        errors: Record<string, { rel: number; abs: number; scale: number }>;
        unmatched: string[];
      };
      assert.deepEqual(report.unmatched, [], "the same tensors on both sides");
      const last = `grad.head.${3 * (widths.split("-").length - 1)}.weight`;
      for (const key of ["loss", "ssl_loss", "linear_loss", "grad.backbone.conv1.weight", "grad.head.0.weight", last]) {
        assert.ok(key in report.errors, `${key} compared`);
      }
      // The hidden Linears' biases feed BatchNorm: their gradient is 0 in exact arithmetic (see above).
      // Linears are at indices 0, 3, 6, … of the nn.Sequential, their BatchNorms at 1, 4, ….
      const beforeBn = Object.keys(report.errors).filter((k) => /^grad\.head\.\d+\.bias$/.test(k) && Number(k.split(".")[2]) % 3 === 0);
      assert.ok(beforeBn.length === widths.split("-").length - 1, beforeBn.join(", "));
      for (const k of beforeBn) assert.ok(report.errors[k].scale < 1e-6 && report.errors[k].abs < 1e-6, `${k} is ~0 on both sides`);
      const worst = Object.entries(report.errors).filter(([k, e]) => !beforeBn.includes(k) && !(e.rel <= TOLERANCE));
      assert.deepEqual(worst, [], `relative error above ${TOLERANCE}`);
    },
  });
}
