import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { runCli, tempDir } from "./helpers.ts";

Deno.test("the CLI reports a missing data folder in one line and exits 1", async () => {
  const r = await runCli(["train", "--num-replicas", "1", "--data-dir", "/nonexistent/data"]);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^selfsup: .*\/nonexistent\/data\/train/);
});

Deno.test("the CLI rejects a malformed number in one line", async () => {
  const r = await runCli(["train", "--batch-size", "lots"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--batch-size needs an integer, got "lots"/);
  assert.ok(!r.stderr.includes("    at "), "no stack trace");
});

for (const [method, name] of [["simclr", /^_tmaimfolder_bs32_e2_iso32_ar18_rs512_ns128_hls64_/], ["byol", /^_tmaimfolder_bs32_e2_iso32_ar18_rs512_ps256_hls64_/]] as const) {
  Deno.test(`a short ${method} run on the demo data trains, evaluates and saves its weights`, async () => {
    using dir = tempDir();
    const data = join(dir.path, "data");
    await writeDemoDataset(data, { trainPerClass: 16, testPerClass: 4 });
    const r = await runCli([
      "train",
      "--method", method,
      "--data-dir", data,
      "--model-dir", join(dir.path, "models"),
      "--log-dir", join(dir.path, "runs"),
      "--num-replicas", "1",
      "--arch", "resnet18",
      "--representation-size", "512",
      "--head-latent-size", "64",
      "--image-size-override", "32",
      "--batch-size", "32",
      "--epochs", "2",
      "--warmup", "1",
      "--seed", "1",
      "--no-cuda",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /train-0\[Epoch 2\]\[160 samples\]/);
    assert.match(r.stdout, /test-0\[Epoch 2\]\[40 samples\]/);
    const loss = Number(r.stdout.match(/train-0\[Epoch 2\].*Loss: ([-\d.]+)/)![1]);
    assert.ok(Number.isFinite(loss), `finite loss, got ${loss}`);
    assert.match(r.stdout, /test accuracy of the online linear classifier: top-1 \d+\.\d\d %/);
    // last and best checkpoints (burn-in 0 for 2 epochs): sidecar + weights each
    const saved = [...Deno.readDirSync(join(dir.path, "models"))].map((e) => e.name).sort();
    assert.equal(saved.length, 4, saved.join(", "));
    for (const f of saved) assert.match(f, name);
    assert.deepEqual(saved.map((f) => f.replace(/^.*\.(last|best)/, "$1")), ["best-10.safetensors", "best.json", "last-10.safetensors", "last.json"]);
    if (method === "simclr") {
      const last = join(dir.path, "models", saved.find((f) => f.endsWith("last.json"))!);
      for (const kind of ["knn", "linear"]) {
        const e = await runCli(["eval", kind, "--checkpoint", last, "--data-dir", data, "--no-cuda", ...(kind === "linear" ? ["--epochs", "5"] : [])]);
        assert.equal(e.code, 0, e.stderr);
        const top1 = Number(e.stdout.match(new RegExp(`${kind} evaluation \\(online weights, resnet18\\): top-1 ([\\d.]+) %`))![1]);
        assert.ok(top1 >= 0 && top1 <= 100);
      }
    }
  });
}
