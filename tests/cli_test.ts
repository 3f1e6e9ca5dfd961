import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { runCli, tempDir } from "./helpers.ts";

Deno.test("the CLI reports a missing data folder in one line and exits 1", async () => {
  const r = await runCli(["train", "--data-dir", "/nonexistent/data"]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "selfsup: --data-dir /nonexistent/data: no such folder\n");
});

Deno.test("a misspelt command or flag gets commander's suggestion, in one line", async () => {
  const cmd = await runCli(["trian", "--epochs", "2"]);
  assert.equal(cmd.code, 1);
  assert.equal(cmd.stderr, "selfsup: unknown command 'trian' (Did you mean train?); run with --help for the commands\n");
  const flag = await runCli(["train", "--epoch", "2"]);
  assert.equal(flag.code, 1);
  assert.match(flag.stderr, /^error: unknown option '--epoch' \(Did you mean --epochs\?\)\n\(run with --help for usage\)\n$/);
});

Deno.test("--help shows each command's own defaults: the demo's are not train's", async () => {
  const help = async (cmd: string) => (await runCli([cmd, "--help"])).stdout.replace(/\s+/g, " ");
  const [train, demo] = [await help("train"), await help("demo")];
  assert.match(train, /--batch-size <n> global batch size, split over replicas \(default: 256; a data set with fewer/);
  assert.match(train, /--epochs <n> number of epochs \(default: simclr 3000, byol 3000, mocov3 100, barlowtwins 3000\)/);
  assert.match(train, /--lr <lr> .* \(default: simclr 0\.3, byol 0\.2, mocov3 0\.6, barlowtwins 0\.2\)/);
  assert.match(train, /--head-latent-size <n> .* \(default: simclr 1024, byol 4096, mocov3 4096, barlowtwins 1024\)/);
  assert.match(train, /--method <name> simclr, byol, mocov3 or barlowtwins \(default: simclr\)/);
  // A setting of some methods shows only their defaults.
  assert.match(train, /--nce-temperature <t> .* \(default: simclr 0\.1, mocov3 1\)/);
  assert.match(train, /--base-decay <tau> .* \(default: byol 0\.996, mocov3 0\.99\)/);
  assert.match(train, /--arch <name> .* \(default: resnet18 for images of 64 px or less, else resnet50\)/);
  assert.match(demo, /--batch-size <n> global batch size, split over replicas \(default: 128\)/);
  assert.match(demo, /--epochs <n> number of epochs \(default: 12\)/);
  assert.match(demo, /--arch <name> .* \(default: resnet18\)/);
  assert.match(demo, /--no-cuda train on the CPU even when a GPU is present \(default: on\)/);
  assert.match(demo, /--data-dir <dir> .* \(default: \.datasets\/selfsup-demo\)/);
});

Deno.test("the CLI rejects a malformed number in one line", async () => {
  const r = await runCli(["train", "--batch-size", "lots"]);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /--batch-size needs an integer, got "lots"/);
  assert.ok(!r.stderr.includes("    at "), "no stack trace");
});

// Barlow Twins with a small projector (the paper's 8192-8192-8192 is for ImageNet).
const shortRuns = [["simclr", []], ["byol", []], ["mocov3", ["--projection-size", "32"]], ["barlowtwins", ["--projector-widths", "64-64-64"]]] as const;
for (const [method, extra] of shortRuns) {
  const name = new RegExp(`^${method}-r18-data-[0-9a-f]{8}\\.`);
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
      "--no-small-stem",
      "--batch-size", "32",
      "--epochs", "2",
      "--warmup", "1",
      "--seed", "1",
      "--no-cuda",
      ...extra,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /train-0\[Epoch 2\]\[160 samples\]/);
    assert.match(r.stdout, /test-0\[Epoch 2\]\[40 samples\]/);
    const loss = Number(r.stdout.match(/train-0\[Epoch 2\].*Loss: ([-\d.]+)/)![1]);
    assert.ok(Number.isFinite(loss), `finite loss, got ${loss}`);
    assert.match(r.stdout, /^train = 160 \| test = 40 \| classes = 10$/m);
    assert.match(r.stdout, /^test accuracy of the online linear classifier after epoch 2: top-1 \d+\.\d\d % \(chance 10\.00 %\)/m);
    // last and best checkpoints (burn-in 0 for 2 epochs): sidecar + weights each
    const saved = [...Deno.readDirSync(join(dir.path, "models"))].map((e) => e.name).sort();
    assert.equal(saved.length, 4, saved.join(", "));
    for (const f of saved) assert.match(f, name);
    // The best is epoch 1's or epoch 2's (step 5 or 10), as the method's test loss went.
    assert.deepEqual(
      saved.map((f) => f.replace(/^.*\.(last|best)/, "$1").replace(/^best-5\./, "best-10.")),
      ["best-10.safetensors", "best.json", "last-10.safetensors", "last.json"],
    );
    if (method !== "byol") {
      const last = join(dir.path, "models", saved.find((f) => f.endsWith("last.json"))!);
      for (const kind of ["knn", "linear"]) {
        const e = await runCli(["eval", kind, "--checkpoint", last, "--no-cuda", ...(kind === "linear" ? ["--epochs", "5"] : [])]);
        assert.equal(e.code, 0, e.stderr);
        const top1 = Number(e.stdout.match(new RegExp(`${kind} evaluation \\(online weights, resnet18\\): top-1 ([\\d.]+) %`))![1]);
        assert.ok(top1 >= 0 && top1 <= 100);
      }
    }
  });
}
