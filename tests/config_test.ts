import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, resolve } from "../cli/config.ts";
import { PRESETS } from "../cli/presets.ts";
import { methodSpec } from "../train/config.ts";
import { byolTau, lrAt } from "../train/schedule.ts";
import { runCli, tempDir } from "./helpers.ts";

Deno.test("defaults follow each reference program where one machine needs no other value", () => {
  const s = resolve({});
  assert.equal(s.method, "simclr");
  assert.equal(s.lr, 0.3);
  assert.equal(s.headLatentSize, 1024);
  assert.equal(s.nceSize, 128);
  assert.equal(s.nceTemperature, 0.1);
  const b = resolve({ method: "byol" });
  assert.equal(b.lr, 0.2);
  assert.equal(b.headLatentSize, 4096);
  assert.equal(b.projectionSize, 256);
  assert.equal(b.baseDecay, 0.996);
  for (const c of [s, b]) {
    assert.equal(c.batchSize, 256);
    assert.equal(c.epochs, 3000);
    assert.equal(c.optimizer, "lars_momentum");
    assert.equal(c.weightDecay, 1e-6);
    assert.equal(c.warmup, 10);
    assert.equal(c.arch, "resnet50");
    assert.equal(c.smallStem, false);
    assert.equal(c.imageSizeOverride, 224);
    assert.equal(c.representationSize, 2048);
    assert.equal(c.distributedPort, 29300);
    assert.equal(c.numReplicas, 1);
  }
  // an explicit value wins over the method default
  assert.equal(resolve({ method: "byol", lr: 0.5 }).lr, 0.5);
});

Deno.test("defaults follow the machine, the other settings and the data unless given", () => {
  const facts = (gpus: number, samples?: number, side = 32) => ({ gpus, data: samples === undefined ? undefined : { samples, imageSize: [side, side] as [number, number] } });
  // one replica per GPU, 1 on a CPU; the batch splits evenly
  assert.equal(resolve({}, {}, {}, facts(0)).numReplicas, 1);
  const four = resolve({}, {}, {}, facts(4));
  assert.deepEqual([four.numReplicas, four.batchSize, four.batchSizePerReplica], [4, 256, 64]);
  assert.equal(resolve({}, {}, {}, facts(3)).batchSize, 255);
  assert.equal(resolve({ numReplicas: 2 }, {}, {}, facts(4)).numReplicas, 2);
  // the representation size follows the backbone and its width
  assert.equal(resolve({ arch: "resnet18" }).representationSize, 512);
  assert.equal(resolve({ arch: "resnet50", baseWidth: 32 }).representationSize, 1024);
  // the warmup fits a short run: 10 % of the epochs, at most 10
  assert.deepEqual([2, 5, 50, 100, 3000].map((epochs) => resolve({ epochs }).warmup), [0, 0, 5, 10, 10]);
  // a preset's warmup (the demo's 1 epoch) shrinks to fit the --epochs given: `demo --epochs 1`
  assert.deepEqual([1, 3].map((epochs) => resolve({ epochs }, { warmup: 1, epochs: 12 }).warmup), [0, 1]);
  assert.throws(() => resolve({ epochs: 1, warmup: 1 }, { warmup: 1 }), /--warmup 1 must be shorter than --epochs 1/);
  // small images: their own size, the 3x3 stem and ResNet-18; large ones: 224 px
  const small = resolve({}, {}, {}, facts(0, 50_000, 32));
  assert.deepEqual([small.imageSizeOverride, small.smallStem, small.arch, small.representationSize], [32, true, "resnet18", 512]);
  const large = resolve({}, {}, {}, facts(0, 50_000, 375));
  assert.deepEqual([large.imageSizeOverride, large.smallStem, large.arch], [224, false, "resnet50"]);
  assert.equal(resolve({ smallStem: false }, {}, {}, facts(0, 100, 32)).smallStem, false, "--no-small-stem wins");
  assert.equal(resolve({ imageSizeOverride: 64 }).smallStem, true, "the size given counts too");
  assert.equal(resolve({ arch: "resnet50" }, {}, {}, facts(0, 100, 32)).arch, "resnet50");
  // a data set smaller than one batch gets the largest power of two it fills; a given batch stays
  assert.equal(resolve({}, {}, {}, facts(0, 100)).batchSize, 64);
  assert.equal(resolve({}, {}, {}, facts(4, 100)).batchSize, 4 * 16);
  assert.equal(resolve({ batchSize: 512 }, {}, {}, facts(0, 100)).batchSize, 512);
  assert.throws(() => resolve({}, {}, {}, facts(0, 1)), /1 training image for 1 replica: a batch needs at least 2 per replica/);
});

Deno.test("contradictions given explicitly stay one-line ConfigErrors", () => {
  const bad: [Parameters<typeof resolve>[0], RegExp][] = [
    [{ method: "byol", nceTemperature: 0.5 }, /--nce-temperature belongs to --method simclr or mocov3, not byol/],
    [{ projectionSize: 128 }, /--projection-size belongs to --method byol or mocov3, not simclr/],
    [{ method: "mocov3", byolLoss: "reference" }, /--byol-loss belongs to --method byol, not mocov3/],
    [{ offDiagonalWeight: 0.01 }, /--off-diagonal-weight belongs to --method barlowtwins, not simclr/],
    [{ method: "barlowtwins", projectorWidths: "8192-0" }, /--projector-widths must be widths joined by -, such as 8192-8192-8192, got 8192-0/],
    [{ method: "moco" as never }, /--method must be simclr, byol, mocov3 or barlowtwins, got moco/],
    [{ batchSize: 100, numReplicas: 8 }, /--batch-size 100 is not divisible by --num-replicas 8/],
    [{ arch: "resnet18", representationSize: 2048 }, /--representation-size 2048 does not match resnet18's 512 features; use --representation-size 512/],
    [{ arch: "resnet18", baseWidth: 32, representationSize: 512 }, /--representation-size 512 does not match resnet18 with --base-width 32's 256 features; use --representation-size 256/],
    [{ arch: "resnet18", baseWidth: 0, representationSize: 512 }, /--base-width must be a positive integer, got 0/],
    [{ arch: "vgg16" }, /unknown --arch vgg16; choose one of resnet18/],
    [{ optimizer: "lars_lbfgs" }, /unknown --optimizer lars_lbfgs/],
    [{ weightInitialization: "he" }, /unknown --weight-initialization he/],
    [{ lrUpdateSchedule: "step" as "fixed" }, /--lr-update-schedule/],
    [{ warmup: 10, epochs: 5 }, /--warmup 10 must be shorter than --epochs 5/],
    [{ distributedRank: 8 }, /--distributed-rank 8 must be in \[0, --num-replicas 1\)/],
  ];
  for (const [given, msg] of bad) {
    assert.throws(() => resolve(given), (e: Error) => e instanceof ConfigError && msg.test(e.message) && !e.message.includes("\n"));
  }
});

Deno.test("--print-config prints the resolved configuration as JSON and exits 0", async () => {
  const r = await runCli(["train", "--print-config", "--method", "byol", "--num-replicas", "2", "--batch-size", "64", "--data-dir", "/nonexistent"]);
  assert.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  assert.equal(c.method, "byol");
  assert.equal(c.lr, 0.2);
  assert.equal(c.batchSize, 64);
  assert.equal(c.batchSizePerReplica, 32);
  assert.equal(c.worldSize, 2);
  assert.equal(c.rank, 0);
  assert.equal(c.localRank, 0);
  assert.equal(c.dataDir, "/nonexistent");
  assert.ok(!("nceTemperature" in c), "no SimCLR-only keys for BYOL");
  assert.match(c.runName, /^byol-r50-nonexistent-[0-9a-f]{8}$/);
  assert.deepEqual(c.sources.batchSize, "flag");
  const s = JSON.parse((await runCli(["--print-config", "--uid", "x", "--preset", "reference-simclr", "--num-replicas", "1"])).stdout);
  assert.equal(s.runName, "x_tmaimfolder_bs4096_e3000_iso224_ar50_rs2048_ns128_hls1024_nt0.1_cjs1_wd1e-06_l0.3_luscos_w10_olmom_nr1");
});

Deno.test("--method barlowtwins --print-config shows its defaults (Zbontar et al. 2021) and not the other methods' settings", async () => {
  const r = await runCli(["train", "--print-config", "--method", "barlowtwins", "--data-dir", "/nonexistent"]);
  assert.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  assert.equal(c.method, "barlowtwins");
  assert.equal(c.projectorWidths, "8192-8192-8192");
  assert.equal(c.offDiagonalWeight, 0.005);
  assert.equal(c.lr, 0.2);
  for (const k of ["nceSize", "nceTemperature", "projectionSize", "baseDecay", "byolLoss"]) assert.ok(!(k in c), `${k} is not shown`);
  assert.match(c.runName, /^barlowtwins-/);
  const simclr = JSON.parse((await runCli(["train", "--print-config", "--data-dir", "/nonexistent"])).stdout);
  assert.ok(!("projectorWidths" in simclr) && !("offDiagonalWeight" in simclr));
});

Deno.test("--method mocov3 --print-config shows its defaults (Chen, Xie, He 2021, ResNet-50 100 epochs) and shares settings with SimCLR and BYOL", async () => {
  const r = await runCli(["train", "--print-config", "--method", "mocov3", "--data-dir", "/nonexistent"]);
  assert.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  assert.equal(c.method, "mocov3");
  assert.deepEqual(
    [c.lr, c.epochs, c.warmup, c.optimizer, c.weightDecay, c.headLatentSize, c.projectionSize, c.nceTemperature, c.baseDecay],
    [0.6, 100, 10, "lars_momentum", 1e-6, 4096, 256, 1, 0.99],
  );
  assert.deepEqual([c.blurProb, c.solarizeProb], [[1, 0.1], [0, 0.2]], "BYOL's asymmetric views, as the authors");
  for (const k of ["nceSize", "byolLoss", "projectorWidths", "offDiagonalWeight"]) assert.ok(!(k in c), `${k} is not shown`);
  assert.match(c.runName, /^mocov3-/);
  // The shared settings take flags as for the other methods.
  const t = JSON.parse((await runCli(["train", "--print-config", "--method", "mocov3", "--nce-temperature", "0.2", "--base-decay", "0.996", "--data-dir", "/x"])).stdout);
  assert.deepEqual([t.nceTemperature, t.baseDecay, t.sources.nceTemperature], [0.2, 0.996, "flag"]);
});

Deno.test("MoCo v3's momentum runs one step ahead of BYOL's schedule (the update after step k uses m(k + 1))", () => {
  assert.equal(methodSpec("mocov3").momentumLead, 1);
  assert.equal(methodSpec("byol").momentumLead ?? 0, 0);
  // m(e) = 1 − (1 − m₀)(1 + cos(πe/E))/2 (main_moco.py adjust_moco_momentum); its last update uses m(E) = 1.
  assert.ok(Math.abs(byolTau(0.99, 0 + 1, 100) - (1 - 0.01 * (1 + Math.cos(Math.PI / 100)) / 2)) < 1e-15);
  assert.equal(byolTau(0.99, 99 + 1, 100), 1);
});

Deno.test("--print-config rejects contradictory flags in one line with exit 1", async () => {
  const r = await runCli(["train", "--print-config", "--method", "byol", "--nce-size", "64"]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), "selfsup: --nce-size belongs to --method simclr, not byol");
});

Deno.test("precedence: flags over a --config file over its preset over the defaults, each setting's source printed", async () => {
  using dir = tempDir();
  const yaml = join(dir.path, "run.yaml");
  Deno.writeTextFileSync(yaml, "preset: cifar-resnet18\nepochs: 7\nlr: 0.5\nblurProb: [1, 0.1]\nseed: null\n");
  const r = await runCli(["train", "--config", yaml, "--lr", "0.7", "--data-dir", "/nonexistent", "--print-config"]);
  assert.equal(r.code, 0, r.stderr);
  const c = JSON.parse(r.stdout);
  assert.deepEqual([c.lr, c.epochs, c.arch, c.batchSize, c.blurProb, c.weightDecay, c.warmup], [0.7, 7, "resnet18", 512, [1, 0.1], 1e-6, 0]);
  assert.equal(c.sources.lr, "flag");
  assert.equal(c.sources.epochs, `config ${yaml}`);
  assert.equal(c.sources.blurProb, `config ${yaml}`);
  assert.equal(c.sources.arch, "preset cifar-resnet18");
  assert.equal(c.sources.batchSize, "preset cifar-resnet18");
  assert.equal(c.sources.warmup, "10 % of --epochs 7, at most 10");
  assert.ok(!("weightDecay" in c.sources), "a plain default has no source");
  // --preset on the command line wins over the file's; JSON works as YAML does
  const json = join(dir.path, "run.json");
  Deno.writeTextFileSync(json, JSON.stringify({ preset: "cifar-resnet18", epochs: 9 }));
  const j = JSON.parse((await runCli(["--config", json, "--preset", "imagenet-resnet50", "--print-config"])).stdout);
  assert.deepEqual([j.epochs, j.arch, j.imageSizeOverride, j.batchSize], [9, "resnet50", 224, 4096]);
});

Deno.test("config files: unknown keys, wrong types, per-process keys and unknown presets are one-line errors", async () => {
  using dir = tempDir();
  const cases: [string, string, RegExp][] = [
    ["a.yaml", "batch_size: 64\n", /^selfsup: .*a\.yaml: unknown key "batch_size" \(did you mean batchSize\?\); keys are those --print-config prints$/],
    ["b.yaml", "epochs: ten\n", /^selfsup: .*b\.yaml: epochs must be a number, got "ten" \(flag --epochs\)$/],
    ["c.json", "{\"distributedRank\": 1}", /^selfsup: .*c\.json: distributedRank is per process; pass --distributed-rank or let a launcher set it$/],
    ["d.yaml", "preset: cifar\n", /^selfsup: .*d\.yaml: preset: unknown preset "cifar"; choose one of cifar-resnet18, /],
    ["e.yaml", "- 1\n- 2\n", /^selfsup: --config .*e\.yaml: expected a mapping of settings/],
    ["f.json", "{", /^selfsup: --config .*f\.json: not valid JSON/],
    ["g.yaml", "method: byol\nnceTemperature: 0.5\n", /^selfsup: config .*g\.yaml: nceTemperature belongs to --method simclr or mocov3, not byol$/],
  ];
  for (const [name, text, msg] of cases) {
    Deno.writeTextFileSync(join(dir.path, name), text);
    const r = await runCli(["--config", join(dir.path, name), "--print-config"]);
    assert.equal(r.code, 1, name);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr.trim(), msg);
  }
  const missing = await runCli(["--config", join(dir.path, "none.yaml")]);
  assert.match(missing.stderr, /^selfsup: --config .*none\.yaml: no such file\n$/);
});

Deno.test("the reference presets are the reference programs' defaults exactly", () => {
  const s = resolve({}, PRESETS["reference-simclr"].settings);
  const b = resolve({}, PRESETS["reference-byol"].settings);
  for (const c of [s, b]) {
    assert.deepEqual(
      [c.batchSize, c.epochs, c.imageSizeOverride, c.arch, c.smallStem, c.representationSize, c.warmup, c.numReplicas, c.optimizer, c.weightDecay],
      [4096, 3000, 224, "resnet50", false, 2048, 10, 8, "lars_momentum", 1e-6],
    );
  }
  assert.deepEqual([s.method, s.lr, s.headLatentSize, s.nceSize, s.nceTemperature], ["simclr", 0.3, 1024, 128, 0.1]);
  assert.deepEqual([b.method, b.lr, b.headLatentSize, b.projectionSize, b.baseDecay, b.byolLoss], ["byol", 0.2, 4096, 256, 0.996, "reference"]);
  // a preset for both methods: the other method's keys are ignored, not errors
  assert.equal(resolve({ method: "byol" }, PRESETS["fashion-mnist"].settings).projectionSize, 128);
  assert.equal(resolve({}, PRESETS["fashion-mnist"].settings).nceTemperature, 0.5);
});

Deno.test("lr schedule at warmup start, warmup end, mid-cosine and last step", () => {
  const s = { base: 4.8, warmupSteps: 100, totalSteps: 1100, kind: "cosine" as const };
  assert.equal(lrAt(s, 0), 4.8 / 100);
  assert.equal(lrAt(s, 99), 4.8);
  assert.ok(Math.abs(lrAt(s, 600) - 4.8 * 0.5) < 1e-12);
  assert.ok(Math.abs(lrAt(s, 1099) - 4.8 * 0.5 * (1 + Math.cos(Math.PI * 999 / 1000))) < 1e-12);
});

Deno.test("BYOL tau schedule at start, middle and end", () => {
  assert.ok(Math.abs(byolTau(0.996, 0, 1000) - 0.996) < 1e-15);
  assert.ok(Math.abs(byolTau(0.996, 500, 1000) - 0.998) < 1e-12);
  assert.ok(Math.abs(byolTau(0.996, 250, 1000) - (1 - 0.004 * (Math.cos(Math.PI / 4) + 1) / 2)) < 1e-12);
  assert.equal(byolTau(0.996, 1000, 1000), 1);
});
