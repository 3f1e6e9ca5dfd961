/**
 * Checkpoints: exact resume after a real SIGTERM, survival of a writer
 * killed mid-checkpoint, and the export read back by torchvision.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Trainer, writeDemoDataset } from "../ffi/native.ts";
import { readSidecar } from "../train/checkpoint.ts";
import { type Method, methodSpec } from "../train/config.ts";
import { readSafetensors, tensorOf, writeSafetensors } from "../train/safetensors.ts";
import { python, runCli, runPython, tempDir, trainerConfig } from "./helpers.ts";

const base = [
  "train", "--num-replicas", "1", "--arch", "resnet18", "--representation-size", "512",
  "--head-latent-size", "64", "--image-size-override", "32", "--no-small-stem", "--batch-size", "32",
  "--epochs", "2", "--warmup", "1", "--seed", "3", "--polyak-ema", "0.9", "--uid", "resume", "--no-cuda",
];
/** The methods resumed, each with its small heads; BYOL's target and VICReg's expander are in the checkpoint. */
const RESUMED: Record<string, string[]> = {
  byol: ["--method", "byol", "--projection-size", "32"],
  mocov3: ["--method", "mocov3", "--projection-size", "32"],
  barlowtwins: ["--method", "barlowtwins", "--projector-widths", "64-64-32"],
  vicreg: ["--method", "vicreg", "--projector-widths", "64-64-32"],
};

async function trainRun(data: string, dir: string, env: Record<string, string> = {}, method = "byol") {
  const args = [...base, ...RESUMED[method], "--data-dir", data, "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs")];
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", join(import.meta.dirname!, "..", "cli", "main.ts"), ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

function lastCheckpoint(modelDir: string) {
  const side = [...Deno.readDirSync(modelDir)].find((e) => e.name.endsWith(".last.json"));
  assert.ok(side, `a last checkpoint in ${modelDir}`);
  const s = readSidecar(join(modelDir, side.name))!;
  return { side: s, tensors: readSafetensors(join(modelDir, s.weights)).tensors };
}

for (const method of Object.keys(RESUMED)) {
  const momentum = methodSpec(method as Method).momentumTarget;
  const what = momentum ? `weights, ${method}'s momentum target` : `weights, ${method}'s heads`;
  Deno.test(`resume after SIGTERM continues bit-for-bit (${method}): ${what}, optimizer, Polyak and loss-scaler state`, async () => {
    using dir = tempDir();
    const data = join(dir.path, "data");
    await writeDemoDataset(data, { trainPerClass: 16, testPerClass: 3 });
    // A loss scaler on fp32 gradients (fp16 needs a GPU), started high
    // enough that steps overflow and are skipped on both sides of the stop.
    const scaler = { SELFSUP_LOSS_SCALER: JSON.stringify({ initScale: 2 ** 127, growthInterval: 2 }) };
    const straight = await trainRun(data, join(dir.path, "a"), scaler, method);
    assert.equal(straight.code, 0, straight.stderr);
    // 5 steps an epoch: stop in the middle of the first epoch, then resume.
    const stopped = await trainRun(data, join(dir.path, "b"), { ...scaler, SELFSUP_SIGTERM_AFTER_STEPS: "3" }, method);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stderr, /SIGTERM: finishing the current step/);
    // The signal is handled while a step is in flight; that step completes.
    const at = stopped.stdout.match(/saved the last checkpoint at epoch 1, batch (\d+)/);
    assert.ok(at && Number(at[1]) >= 3 && Number(at[1]) < 5, stopped.stdout);
    const resumed = await trainRun(data, join(dir.path, "b"), scaler, method);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, new RegExp(`resumed .* at epoch 1, batch ${at[1]} \\(step ${at[1]}\\)`));

    const a = lastCheckpoint(join(dir.path, "a", "models"));
    const b = lastCheckpoint(join(dir.path, "b", "models"));
    assert.equal(a.side.step, 10);
    assert.deepEqual([b.side.epoch, b.side.batch, b.side.step], [a.side.epoch, a.side.batch, a.side.step]);
    assert.deepEqual([...b.tensors.keys()], [...a.tensors.keys()]);
    const target = momentum ? ["model.target."] : [];
    for (const prefix of [...target, "model.head.", "optim.", "polyak.", "model.backbone.", "amp.scale", "amp.growth_tracker"]) {
      assert.ok([...a.tensors.keys()].some((k) => k.startsWith(prefix)), `checkpoint holds ${prefix}*`);
    }
    for (const [k, t] of a.tensors) assert.deepEqual(b.tensors.get(k)!.data, t.data, `${k} differs after resume`);
    const skipped = [...straight.stdout.matchAll(/^amp-0\[Epoch \d\]: (\d+) of 5 steps skipped/gm)].map((m) => Number(m[1]));
    assert.ok(skipped.length === 2 && skipped[0] > 0 && skipped[0] + skipped[1] < 10, straight.stdout);
  });
}

Deno.test("a writer killed mid-checkpoint leaves the previous checkpoint intact and loadable", async () => {
  using dir = tempDir();
  for (let round = 0; round < 3; round++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", join(import.meta.dirname!, "fixtures", "save_forever.ts"), dir.path],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    // Let it save a few times, then kill it without warning at some point of a write.
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let seen = "";
    while (!/saved [3-9]/.test(seen)) seen += (await reader.read()).value ?? "";
    await new Promise((r) => setTimeout(r, 37 * (round + 1)));
    child.kill("SIGKILL");
    await child.status;
    await reader.cancel();
    const sides = [...Deno.readDirSync(dir.path)].map((e) => e.name).filter((f) => f.endsWith(".last.json"));
    assert.equal(sides.length, 1, "exactly one sidecar survives");
    const named = readSidecar(join(dir.path, sides[0]))!;
    assert.ok(named.step >= 3, "it names a checkpoint saved before the kill");
    using trainer = await Trainer.create(trainerConfig({
      device: "cpu", arch: "resnet18", representationSize: 512, headLatentSize: 64, nceSize: 128, nceTemperature: 0.1,
      numClasses: 3, optimizer: "lars_momentum", weightDecay: 1e-6,
    }));
    await trainer.loadCheckpoint(join(dir.path, named.weights));
  }
});

Deno.test("a truncated or foreign checkpoint is a one-line error", async () => {
  using dir = tempDir();
  using trainer = await Trainer.create(trainerConfig({
    device: "cpu", arch: "resnet18", representationSize: 512, headLatentSize: 64, nceSize: 128, nceTemperature: 0.1,
    numClasses: 3, optimizer: "lars_momentum", weightDecay: 1e-6,
  }));
  const good = join(dir.path, "good.safetensors");
  await trainer.saveCheckpoint(good);
  const bytes = Deno.readFileSync(good);
  Deno.writeFileSync(join(dir.path, "cut.safetensors"), bytes.subarray(0, bytes.length >> 1));
  await assert.rejects(() => trainer.loadCheckpoint(join(dir.path, "cut.safetensors")), /cut\.safetensors is not a readable checkpoint/);
  writeSafetensors(join(dir.path, "other.safetensors"), [["x", tensorOf([1], new Float32Array([1]))]]);
  await assert.rejects(
    () => trainer.loadCheckpoint(join(dir.path, "other.safetensors")),
    /has no model\..*made by another --method\/--arch/,
  );
  await trainer.loadCheckpoint(good);
});

/**
 * The methods exported, each with its small heads, the trainer settings that
 * rebuild its model, and the weights exported: SimCLR's, Barlow Twins' and
 * VICReg's online backbone, MoCo v3's momentum encoder (--weights target).
 */
const EXPORTED: Record<string, { flags: string[]; settings: Record<string, unknown>; weights: "online" | "target" }> = {
  simclr: { flags: [], settings: { method: "simclr" }, weights: "online" },
  mocov3: { flags: ["--method", "mocov3", "--projection-size", "32"], settings: { method: "mocov3", projectionSize: 32 }, weights: "target" },
  barlowtwins: {
    flags: ["--method", "barlowtwins", "--projector-widths", "32-32-16"],
    settings: { method: "barlowtwins", projectorWidths: "32-32-16" },
    weights: "online",
  },
  vicreg: { flags: ["--method", "vicreg", "--projector-widths", "32-32-16"], settings: { method: "vicreg", projectorWidths: "32-32-16" }, weights: "online" },
};
for (const [method, { flags, settings, weights }] of Object.entries(EXPORTED)) {
  Deno.test({
    name: `export (${method}, --weights ${weights}): torchvision's resnet18 loads the backbone (only fc.* missing) and gives selfsup's features`,
    ignore: python === "",
    async fn() {
      using dir = tempDir();
      const data = join(dir.path, "data");
      await writeDemoDataset(data, { trainPerClass: 8, testPerClass: 2 });
      const models = join(dir.path, "models");
      const r = await runCli([
        "train", "--num-replicas", "1", "-a", "resnet18", "--representation-size", "512", "--head-latent-size", "32",
        "--image-size-override", "32", "--no-small-stem", "--batch-size", "16", "--epochs", "2", "--warmup", "1", "--data-dir", data,
        "--model-dir", models, "--log-dir", join(dir.path, "runs"), "--no-cuda", ...flags,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const side = [...Deno.readDirSync(models)].find((e) => e.name.endsWith(".last.json"))!.name;
      const checkpoint = join(models, readSidecar(join(models, side))!.weights);
      const out = join(dir.path, "backbone.safetensors");
      const e = await runCli(["export", join(models, side), out, "--weights", weights]);
      assert.equal(e.code, 0, e.stderr);
      // selfsup's features for some images: from the checkpoint (online), or
      // from the export read back into a backbone (the target has no
      // feature path of its own here).
      const images = join(dir.path, "images.safetensors");
      const x = new Float32Array(2 * 3 * 32 * 32).map((_, i) => (i * 7919 % 1000) / 1000);
      writeSafetensors(images, [["images", tensorOf([2, 3, 32, 32], x)]]);
      using trainer = await Trainer.create(trainerConfig({
        device: "cpu", arch: "resnet18", representationSize: 512, headLatentSize: 32, ...settings,
        numClasses: 10, optimizer: "lars_momentum", weightDecay: 1e-6,
      }));
      if (weights === "online") {
        await trainer.loadCheckpoint(checkpoint);
      } else {
        // The export is the momentum encoder's backbone, which training moved away from the online one.
        const ck = readSafetensors(checkpoint).tensors;
        const exported = readSafetensors(out).tensors.get("layer1.0.conv1.weight")!.data;
        assert.deepEqual(exported, ck.get("model.target.backbone.layer1.0.conv1.weight")!.data);
        assert.notDeepEqual(exported, ck.get("model.backbone.layer1.0.conv1.weight")!.data);
        await trainer.loadBackbone(out);
      }
      await trainer.debugFeatures(images, join(dir.path, "native.safetensors"));
      const report = JSON.parse(await runPython("export_check.py", ["resnet18", out, images, join(dir.path, "native.safetensors")]));
      assert.deepEqual(report.missing, ["fc.bias", "fc.weight"]);
      assert.deepEqual(report.unexpected, []);
      assert.ok(report.featureError <= 1e-5, `features differ by ${report.featureError}`);
    },
  });
}
