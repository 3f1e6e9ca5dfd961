/**
 * Algorithm parity with PyTorch on the same libtorch (tests/python/
 * algorithms_reference.py): the losses and their gradients, one or more
 * steps of every optimizer, and every backbone against torchvision.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { debugRun } from "../ffi/native.ts";
import { python, runPython, tempDir } from "./helpers.ts";
import { tensorOf, writeSafetensors } from "../train/safetensors.ts";

type Report = {
  errors: Record<string, { rel: number; abs: number; scale: number }>;
  unmatched: string[];
  layout?: { missing: string[]; unexpected: string[]; mismatched: string[] };
};

const script = "algorithms_reference.py";

/** Reference and native outputs compared; every tensor within `tol` relative. */
function assertClose(report: Report, tol: number, expectKeys: string[]): void {
  assert.deepEqual(report.unmatched, [], "both sides wrote the same tensors");
  for (const k of expectKeys) assert.ok(k in report.errors, `${k} compared`);
  const bad = Object.entries(report.errors).filter(([, e]) => !(e.rel <= tol));
  assert.deepEqual(bad, [], `relative error above ${tol}`);
}

/** The new methods' losses are written from their papers in methods_reference.py. */
const METHOD_LOSSES = ["mocoV3", "barlowTwins"];

async function parity(kind: "loss" | "optimizer", spec: Record<string, unknown>): Promise<Report> {
  using dir = tempDir();
  const f = (n: string) => join(dir.path, n);
  const reference = METHOD_LOSSES.includes(spec.loss as string) ? "methods_reference.py" : script;
  await runPython(reference, [kind, JSON.stringify(spec), f("in.safetensors"), f("ref.safetensors")]);
  await debugRun(kind, spec, f("in.safetensors"), f("out.safetensors"));
  return JSON.parse(await runPython(script, ["compare", f("ref.safetensors"), f("out.safetensors")]));
}

const lossCases = [
  { loss: "ntXent", temperature: 0.1, batch: 16, dim: 32 },
  { loss: "ntXent", temperature: 0.5, batch: 5, dim: 8, seed: 1 },
  { loss: "ntXent", temperature: 0.2, batch: 6, dim: 16, seed: 2, replicas: 3, offset: 6 },
  { loss: "byol", norm: "paper", batch: 16, dim: 32 },
  { loss: "byol", norm: "reference", batch: 7, dim: 12, seed: 3 },
  { loss: "mocoV3", temperature: 1.0, batch: 16, dim: 32 },
  { loss: "mocoV3", temperature: 0.2, batch: 5, dim: 8, seed: 5 },
  // Keys of 3 replicas, this one's at rows 6..11: every replica's keys are negatives.
  { loss: "mocoV3", temperature: 1.0, batch: 6, dim: 16, seed: 6, replicas: 3, offset: 6 },
  { loss: "barlowTwins", lambd: 0.005, batch: 16, dim: 32 },
  { loss: "barlowTwins", lambd: 0.0051, batch: 6, dim: 24, seed: 4 },
];
for (const spec of lossCases) {
  Deno.test({
    name: `loss parity with PyTorch: ${JSON.stringify(spec)}`,
    ignore: python === "",
    async fn() {
      const grads = spec.loss === "byol" ? ["grad.p1", "grad.p2"] : spec.loss === "mocoV3" ? ["grad.q1", "grad.q2"] : ["grad.z1", "grad.z2"];
      assertClose(await parity("loss", spec), 1e-5, ["loss", ...grads]);
    },
  });
}

Deno.test({
  name: "the PyTorch references of the new methods' losses agree with their multi-replica forms and known values",
  ignore: python === "",
  async fn() {
    // methods_reference.py exits non-zero, naming the check, when one fails.
    const out = JSON.parse(await runPython("methods_reference.py", ["selfcheck"])) as Record<string, number>;
    assert.ok(Object.keys(out).length >= 7, JSON.stringify(out));
    for (const [check, err] of Object.entries(out)) assert.ok(err < 1e-5, `${check}: ${err}`);
  },
});

const optimizerCases = [
  { optimizer: "lars_momentum", weightDecay: 1e-4, lr: 0.5, steps: 3 },
  { optimizer: "lars_sgd", weightDecay: 0, lr: 0.5, steps: 2, zeroGradient: true },
  { optimizer: "sgd", weightDecay: 1e-3, lr: 0.1, steps: 2 },
  { optimizer: "momentum", weightDecay: 1e-3, lr: 0.1, steps: 3 },
  { optimizer: "adam", weightDecay: 1e-2, lr: 1e-2, steps: 3 },
  { optimizer: "adamw", weightDecay: 1e-2, lr: 1e-2, steps: 3 },
  { optimizer: "rmsprop", weightDecay: 1e-3, lr: 1e-2, steps: 3 },
  { optimizer: "adadelta", weightDecay: 1e-3, lr: 1.0, steps: 3 },
  { optimizer: "lars_adam", weightDecay: 1e-3, lr: 1e-2, steps: 2 },
];
for (const spec of optimizerCases) {
  Deno.test({
    name: `optimizer parity with torch.optim: ${spec.optimizer} (wd ${spec.weightDecay}, ${spec.steps} steps)`,
    ignore: python === "",
    async fn() {
      const last = spec.steps - 1;
      const keys = ["conv.weight", "fc.weight", "fc.bias", "bn.weight"].map((n) => `step${last}.${n}`);
      assertClose(await parity("optimizer", spec), 1e-5, keys);
    },
  });
}

for (const arch of ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2"]) {
  Deno.test({
    name: `${arch}: torchvision's names, shapes, dtypes, features and BN statistics`,
    ignore: python === "",
    async fn() {
      using dir = tempDir();
      const input = join(dir.path, "b.in.safetensors");
      const output = join(dir.path, "b.out.safetensors");
      writeImages(input, 4, 64, 7);
      await debugRun("backbone", { arch, seed: 5 }, input, output);
      const report: Report = JSON.parse(await runPython(script, ["backbone", arch, output]));
      assert.deepEqual(report.layout, { missing: [], unexpected: [], mismatched: [] });
      assertClose(report, 1e-5, ["features.eval", "features.train", "after.layer4.1.bn2.running_var"]);
    },
  });
}

/** n random images (3×s×s) in [0, 1) from a small LCG, as safetensors "images". */
function writeImages(path: string, n: number, s: number, seed: number): void {
  const data = new Float32Array(n * 3 * s * s);
  let x = seed;
  for (let i = 0; i < data.length; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    data[i] = x / 2147483648;
  }
  writeSafetensors(path, [["images", tensorOf([n, 3, s, s], data)]]);
}
