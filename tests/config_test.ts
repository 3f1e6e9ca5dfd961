import assert from "node:assert/strict";
import { ConfigError, DEFAULTS, resolve } from "../cli/config.ts";
import { byolTau, lrAt } from "../train/schedule.ts";
import { runCli } from "./helpers.ts";

Deno.test("defaults follow each reference program", () => {
  const s = resolve({ numReplicas: 1 });
  assert.equal(s.method, "simclr");
  assert.equal(s.lr, 0.3);
  assert.equal(s.headLatentSize, 1024);
  assert.equal(s.nceSize, 128);
  assert.equal(s.nceTemperature, 0.1);
  const b = resolve({ method: "byol", numReplicas: 1 });
  assert.equal(b.lr, 0.2);
  assert.equal(b.headLatentSize, 4096);
  assert.equal(b.projectionSize, 256);
  assert.equal(b.baseDecay, 0.996);
  for (const c of [s, b]) {
    assert.equal(c.batchSize, 4096);
    assert.equal(c.epochs, 3000);
    assert.equal(c.optimizer, "lars_momentum");
    assert.equal(c.weightDecay, 1e-6);
    assert.equal(c.warmup, 10);
    assert.equal(c.arch, "resnet50");
    assert.equal(c.representationSize, 2048);
    assert.equal(c.distributedPort, 29300);
  }
  // an explicit value wins over the method default
  assert.equal(resolve({ method: "byol", lr: 0.5, numReplicas: 1 }).lr, 0.5);
  assert.equal(DEFAULTS.numReplicas, 8);
});

Deno.test("a flag of the other method and contradictions are one-line ConfigErrors", () => {
  const bad: [Parameters<typeof resolve>[0], RegExp][] = [
    [{ method: "byol", nceTemperature: 0.5 }, /--nce-temperature belongs to --method simclr, not byol/],
    [{ projectionSize: 128 }, /--projection-size belongs to --method byol, not simclr/],
    [{ batchSize: 100, numReplicas: 8 }, /--batch-size 100 is not divisible by --num-replicas 8/],
    [{ arch: "resnet18", numReplicas: 1 }, /--representation-size 2048 does not match resnet18's 512 features/],
    [{ arch: "resnet18", baseWidth: 32, representationSize: 512, numReplicas: 1 }, /--representation-size 512 does not match resnet18 with --base-width 32's 256 features; use --representation-size 256/],
    [{ arch: "resnet18", baseWidth: 0, representationSize: 512, numReplicas: 1 }, /--base-width must be a positive integer, got 0/],
    [{ arch: "vgg16", numReplicas: 1 }, /unknown --arch vgg16; choose one of resnet18/],
    [{ optimizer: "lars_lbfgs", numReplicas: 1 }, /unknown --optimizer lars_lbfgs/],
    [{ weightInitialization: "he", numReplicas: 1 }, /unknown --weight-initialization he/],
    [{ lrUpdateSchedule: "step" as "fixed", numReplicas: 1 }, /--lr-update-schedule/],
    [{ warmup: 5, epochs: 5, numReplicas: 1 }, /--warmup 5 must be shorter than --epochs 5/],
    [{ distributedRank: 8 }, /--distributed-rank 8 must be in \[0, --num-replicas 8\)/],
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
  assert.match(c.runName, /^_tmaimfolder_bs32_e3000_/);
  const s = JSON.parse((await runCli(["--print-config", "--num-replicas", "1"])).stdout);
  assert.equal(s.runName, "_tmaimfolder_bs4096_e3000_iso224_ar50_rs2048_ns128_hls1024_nt0.1_cjs1_wd1e-06_l0.3_luscos_w10_olmom_nr1");
});

Deno.test("--print-config rejects contradictory flags in one line with exit 1", async () => {
  const r = await runCli(["train", "--print-config", "--method", "byol", "--nce-size", "64"]);
  assert.equal(r.code, 1);
  assert.equal(r.stderr.trim(), "selfsup: --nce-size belongs to --method simclr, not byol");
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
