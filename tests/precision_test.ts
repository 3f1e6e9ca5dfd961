/**
 * Mixed precision and the step's fast paths: the --precision/--half
 * flags, autocast's dtype policy (bf16 on the CPU here; fp16 and bf16 on
 * CUDA when a GPU is present), a short CPU bf16 run against fp32, metrics
 * read back every N steps giving the same logs, the loss scaler's lines,
 * and on a GPU 200 steps of SimCLR with --half on the demo data set.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { debugRun, Loader, Trainer, version, writeDemoDataset } from "../ffi/native.ts";
import { ConfigError, resolve } from "../cli/config.ts";
import { runName } from "../train/runname.ts";
import { metricsEvery } from "../train/loop.ts";
import { python, runCli as cli, runPython, tempDir, trainerConfig, loaderConfig } from "./helpers.ts";
import { skipReason } from "./logging_helpers.ts";

const cuda = version().cuda;
const noGpu = cuda ? null : "libtorch sees no CUDA device on this machine";

Deno.test("--half is --precision fp16; contradictions and unknown precisions are one-line errors", () => {
  const one = { numReplicas: 1 };
  assert.equal(resolve({ ...one, half: true }).precision, "fp16");
  assert.equal(resolve({ ...one, precision: "fp16" }).half, true);
  assert.equal(resolve({ ...one, half: true, precision: "fp16" }).precision, "fp16");
  assert.deepEqual([resolve(one).precision, resolve(one).half], ["fp32", false]);
  assert.equal(resolve({ ...one, precision: "bf16" }).half, false);
  assert.throws(
    () => resolve({ ...one, half: true, precision: "bf16" }),
    (e) => e instanceof ConfigError && /contradicts --precision bf16/.test(e.message),
  );
  assert.throws(
    () => resolve({ ...one, precision: "fp8" as "fp16" }),
    /--precision must be fp32, fp16 or bf16, got fp8/,
  );
  // With --uid a run is named as the reference does: --half runs with h1; bf16 is selfsup's own (pbf16).
  const named = { ...one, uid: "p" };
  assert.match(runName(resolve({ ...named, half: true })), /_h1$/);
  assert.equal(runName(resolve({ ...named, precision: "fp16" })), runName(resolve({ ...named, half: true })));
  assert.match(runName(resolve({ ...named, precision: "bf16" })), /_pbf16$/);
  assert.doesNotMatch(runName(resolve(named)), /_h1|_p(fp|bf)/);
});

Deno.test("metrics are read back every step on the CPU, every 16 on CUDA, or as SELFSUP_METRICS_EVERY says", () => {
  assert.equal(metricsEvery(false, {}), 1);
  assert.equal(metricsEvery(true, {}), 16);
  assert.equal(metricsEvery(true, { SELFSUP_METRICS_EVERY: "3" }), 3);
  assert.throws(() => metricsEvery(false, { SELFSUP_METRICS_EVERY: "0" }), /positive integer/);
});

Deno.test("CPU autocast policy (bf16 and fp16): conv/linear outputs reduced; losses, BN statistics, parameters, gradients and optimizer state fp32", async () => {
  using dir = tempDir();
  for (const precision of ["bf16", "fp16"]) {
    await debugRun(
      "amp_policy",
      { device: "cpu", precision },
      "",
      join(dir.path, `${precision}.safetensors`),
    );
  }
});

/**
 * Layers whose output selfsup keeps in fp32 where torch.autocast leaves it
 * in the reduced type: the losses' normalisations, NT-Xent's similarity
 * matrix, BYOL's regression, Barlow Twins' cross-correlation and VICReg's covariance run with autocast suspended (amp.rs), which
 * measured several times closer to fp32 (docs/BENCHMARKS.md, "Mixed
 * precision"). Everything else must match torch layer for layer.
 */
const FP32_BY_DESIGN = new Set(["normalize", "similarity", "regression", "cross_correlation", "covariance"]);

// bf16 for each method and fp16 for SimCLR on the CPU (its fp16 kernels
// are slow); every combination on CUDA when libtorch sees a GPU.
const TRACED: [string, string, string][] = [
  ["cpu", "simclr", "bf16"],
  ["cpu", "byol", "bf16"],
  ["cpu", "mocov3", "bf16"],
  ["cpu", "barlowtwins", "bf16"],
  ["cpu", "vicreg", "bf16"],
  ["cpu", "simclr", "fp16"],
  ...["simclr", "byol", "mocov3", "barlowtwins", "vicreg"].flatMap((m) => ["fp16", "bf16"].map((p): [string, string, string] => ["cuda", m, p])),
];
for (const [device, method, precision] of TRACED) {
  Deno.test({
    name:
      `${method} ${precision} on ${device}: every layer's output dtype under autocast equals torch.autocast's (losses fp32 by design)`,
    ignore: python === "" || (device === "cuda" && !cuda),
    async fn() {
      using dir = tempDir();
      const [ours, theirs] = [join(dir.path, "selfsup.json"), join(dir.path, "torch.json")];
      await debugRun("amp_trace", { method, precision, device }, "", ours);
      await runPython("amp_trace.py", [method, precision, theirs, device]);
      const read = (f: string) => JSON.parse(Deno.readTextFileSync(f)).trace as [string, string][];
      const [a, b] = [read(ours), read(theirs)];
      assert.deepEqual(a.map((r) => r[0]), b.map((r) => r[0]), "the same layers in the same order");
      const low = precision === "bf16" ? "bfloat16" : "float16";
      assert.ok(
        b.filter((r) => r[0] === "conv").every((r) => r[1] === low),
        "torch runs convolutions reduced",
      );
      a.forEach(([kind, dtype], i) => {
        const want = FP32_BY_DESIGN.has(kind) ? "float32" : b[i][1];
        assert.equal(dtype, want, `layer ${i} (${kind}): selfsup ${dtype}, torch ${b[i][1]}`);
      });
    },
  });
}

Deno.test("the CPU bf16 guard refuses AMX CPUs at libtorch's AVX-512 kernel level, in one line", async () => {
  using dir = tempDir();
  const out = join(dir.path, "guard.json");
  const guard = async (spec: Record<string, unknown>) => {
    await debugRun("cpu_bf16_guard", spec, "", out);
    return JSON.parse(Deno.readTextFileSync(out)) as {
      amx: string[];
      capability: string;
      refusal: string | null;
    };
  };
  const xeon = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n";
  const epyc = "processor\t: 0\nflags\t\t: fpu sse avx2 sha_ni\n";
  const refused = await guard({ cpuinfo: xeon, capability: "AVX512" });
  assert.deepEqual(refused.amx, ["amx_bf16", "amx_tile"]);
  assert.ok(refused.refusal, "refused");
  assert.equal(refused.refusal!.split("\n").length, 1);
  assert.match(
    refused.refusal!,
    /--precision bf16 on this CPU \(amx_bf16, amx_tile\).*ATEN_CPU_CAPABILITY=avx2.*--precision fp32/,
  );
  // Lifted by the AVX2 kernel level or the explicit override; never on CPUs without AMX.
  assert.equal((await guard({ cpuinfo: xeon, capability: "AVX2" })).refusal, null);
  assert.equal((await guard({ cpuinfo: xeon, capability: "AVX512", allowed: true })).refusal, null);
  assert.equal((await guard({ cpuinfo: epyc, capability: "AVX512" })).refusal, null);
  assert.equal((await guard({ cpuinfo: "", capability: "AVX512" })).refusal, null);
  // This machine: refused exactly when it has AMX and runs AVX-512 kernels.
  const here = await guard({});
  assert.equal(
    here.refusal !== null,
    here.amx.length > 0 && here.capability.startsWith("AVX512"),
    JSON.stringify(here),
  );
});

Deno.test({
  name: "CUDA autocast policy (fp16 and bf16)",
  ignore: skipReason("CUDA autocast policy", noGpu),
  async fn() {
    using dir = tempDir();
    for (const precision of ["fp16", "bf16"]) {
      await debugRun(
        "amp_policy",
        { device: "cuda", precision },
        "",
        join(dir.path, `${precision}.safetensors`),
      );
    }
  },
});

/**
 * Beyond each layer's output dtype (where casts happen, BN's bf16 backward,
 * the losses' precision): for one SimCLR step on the same weights and
 * views, selfsup's bf16 gradients may depart from the fp32 ones no more
 * than torch.autocast's do, layer by layer. (At initialisation bf16 alone
 * moves them by tens of percent on both sides: BatchNorm amplifies the
 * rounding of features that barely differ across the batch.)
 */
Deno.test({
  name:
    "SimCLR bf16 gradients are no farther from fp32 than torch.autocast's, layer by layer (same weights and views)",
  ignore: python === "",
  async fn() {
    using dir = tempDir();
    const f = (n: string) => join(dir.path, n);
    await debugRun("cpu_bf16_guard", {}, "", f("guard.json"));
    if (JSON.parse(Deno.readTextFileSync(f("guard.json"))).refusal) return; // bf16 refused on this CPU (test above)
    using trainer = await Trainer.create(trainerConfig({
      arch: "resnet18",
      smallStem: true,
      baseWidth: 8,
      representationSize: 64,
      headLatentSize: 64,
      nceSize: 32,
      nceTemperature: 0.1,
      numClasses: 10,
      optimizer: "momentum",
      weightDecay: 5e-4,
      seed: 3,
      precision: "bf16",
    }));
    await trainer.saveWeights(f("weights.safetensors"));
    await runPython("amp_grad.py", [
      "make",
      f("weights.safetensors"),
      f("inputs.safetensors"),
      f("torch.safetensors"),
      "8",
      "1",
    ]);
    await trainer.debugGradients(f("inputs.safetensors"), f("selfsup.safetensors"));
    const report = JSON.parse(
      await runPython("amp_grad.py", ["compare", f("torch.safetensors"), f("selfsup.safetensors")]),
    ) as Record<
      string,
      { self_fp32: number; torch_fp32: number }
    >;
    // Biases right before a BatchNorm have zero gradient in exact arithmetic: noise on every side.
    const rows = Object.entries(report).filter(([k]) =>
      k.startsWith("grad.") && !["grad.head.0.bias", "grad.head.3.bias"].includes(k)
    );
    assert.ok(rows.length > 60, `${rows.length} gradients compared`);
    const ratios = rows.map(([k, r]) => [k, r.self_fp32 / r.torch_fp32] as const).sort((a, b) => a[1] - b[1]);
    const median = ratios[Math.floor(ratios.length / 2)][1];
    const shown = ratios.map(([k, r]) => `${k.slice(5)} ${r.toFixed(2)}`).join(", ");
    assert.ok(
      rows.every(([, r]) => r.torch_fp32 > 1e-3),
      "bf16 changes every gradient (the comparison measures something)",
    );
    assert.ok(
      median < 1.2,
      `median (selfsup bf16 − fp32) / (torch bf16 − fp32) = ${median.toFixed(2)}: ${shown}`,
    );
    const [worst, ratio] = ratios[ratios.length - 1];
    assert.ok(
      ratio < 2,
      `${worst}: selfsup's bf16 gradient departs ${ratio.toFixed(2)}x as far from fp32 as torch's: ${shown}`,
    );
  },
});

Deno.test({
  name: "--precision fp16 without a GPU is a one-line error",
  ignore: skipReason("--precision fp16 without a GPU", cuda ? "this machine has a GPU" : null),
  async fn() {
    using dir = tempDir();
    await writeDemoDataset(join(dir.path, "data"), { seed: 1, trainPerClass: 2, testPerClass: 1, size: 16 });
    const r = await cli(["train", "--half", "--num-replicas", "1", "--data-dir", join(dir.path, "data"), "--model-dir", join(dir.path, "m")]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    assert.match(r.stderr, /--precision fp16 \(--half\) needs a GPU/);
  },
});

Deno.test("a short CPU bf16 run stays finite and tracks the fp32 loss (or is refused on an AMX CPU)", async () => {
  using dir = tempDir();
  await debugRun("cpu_bf16_guard", {}, "", join(dir.path, "guard.json"));
  const { refusal } = JSON.parse(Deno.readTextFileSync(join(dir.path, "guard.json")));
  if (refusal) {
    const bf16 = Trainer.create(trainerConfig({
      arch: "resnet18",
      representationSize: 512,
      headLatentSize: 32,
      numClasses: 10,
      optimizer: "momentum",
      weightDecay: 0,
      precision: "bf16",
    }));
    await assert.rejects(() => bf16, /ATEN_CPU_CAPABILITY=avx2/);
    return;
  }
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 8, testPerClass: 1 });
  const losses = async (precision: "fp32" | "bf16") => {
    using loader = await Loader.create(loaderConfig({
      dataDir: data,
      split: "train",
      batchSize: 16,
      imageSize: 16,
      augment: true,
      shuffle: true,
      dropLast: true,
      seed: 1,
      workers: 1,
    }));
    using trainer = await Trainer.create(trainerConfig({
      arch: "resnet18",
      representationSize: 512,
      headLatentSize: 32,
      nceSize: 16,
      numClasses: 10,
      optimizer: "momentum",
      weightDecay: 5e-4,
      seed: 1,
      precision,
    }));
    const out: number[] = [];
    for (const epoch of [0, 1]) {
      loader.startEpoch(epoch);
      for (let b = await loader.next(); b; b = await loader.next()) {
        out.push((await trainer.trainStep(b, 0.01)).loss);
      }
    }
    return out;
  };
  const [full, bf16] = [await losses("fp32"), await losses("bf16")];
  assert.equal(bf16.length, 10);
  assert.ok(bf16.every(Number.isFinite), `bf16 losses ${bf16}`);
  // Same weights, same views: the first step differs only by bf16 rounding
  // (2.5 % measured: 20 layers of 8-bit mantissas, then NT-Xent's 1/τ).
  assert.ok(Math.abs(bf16[0] - full[0]) < 0.05 * full[0], `first step: bf16 ${bf16[0]} vs fp32 ${full[0]}`);
  // After that the two runs part ways, as two seeds would (9 % apart measured).
  const mean = (v: number[]) => v.reduce((a, b) => a + b) / v.length;
  assert.ok(
    Math.abs(mean(bf16) - mean(full)) < 0.2 * mean(full),
    `mean loss: bf16 ${mean(bf16)} vs fp32 ${mean(full)}`,
  );
});

/** The summary lines without their timings, and metrics.jsonl without its clock and stage timings (time_*). */
function logsOf(stdout: string, logDir: string) {
  const lines = stdout.split("\n").filter((l) => /^(train|test|amp)-0\[/.test(l)).map((l) =>
    l.replace(/\[[\d.]+ sec\]/, "")
  );
  const run = [...Deno.readDirSync(logDir)].find((e) => e.isDirectory)!.name;
  const jsonl = Deno.readTextFileSync(join(logDir, run, "metrics.jsonl")).trim().split("\n").map((l) => {
    const { time: _, ...rest } = JSON.parse(l);
    return JSON.stringify(rest);
  }).filter((l) => !l.startsWith('{"tag":"time_'));
  return { lines, jsonl };
}

Deno.test("metrics read back every 3 steps give the logs of reading every step, loss-scaler lines included", async () => {
  using dir = tempDir();
  const data = join(dir.path, "data");
  await writeDemoDataset(data, { trainPerClass: 4, testPerClass: 1 });
  const run = async (every: number) => {
    const out = join(dir.path, `every${every}`);
    const r = await cli([
      "train",
      "--num-replicas",
      "1",
      "--data-dir",
      data,
      "--model-dir",
      join(out, "models"),
      "--log-dir",
      join(out, "runs"),
      "--arch",
      "resnet18",
      "--representation-size",
      "512",
      "--head-latent-size",
      "32",
      "--nce-size",
      "16",
      "--image-size-override",
      "16",
      "--no-small-stem",
      "--batch-size",
      "8",
      "--epochs",
      "1",
      "--warmup",
      "0",
      "--seed",
      "2",
      "--optimizer",
      "lars_momentum",
      "--workers-per-replica",
      "1",
      "--no-cuda",
    ], {
      SELFSUP_METRICS_EVERY: String(every),
      // fp32 gradients scaled from near fp32's maximum: the first steps
      // overflow and are skipped, then the scale grows back every 2 steps.
      SELFSUP_LOSS_SCALER: JSON.stringify({ initScale: 2 ** 120, growthInterval: 2 }),
    });
    assert.equal(r.code, 0, r.stderr);
    return logsOf(r.stdout, join(out, "runs"));
  };
  const [each, batched] = [await run(1), await run(3)];
  assert.deepEqual(batched, each);
  // 40 images in batches of 8: 5 steps, some skipped by the scaler.
  const amp = each.lines.find((l) => l.startsWith("amp-0"));
  const m = amp?.match(/: (\d+) of 5 steps skipped \(inf\/NaN gradients\), loss scale (\S+)$/);
  assert.ok(m && Number(m[1]) > 0 && Number(m[1]) < 5, amp);
  const scales = each.jsonl.map((l) => JSON.parse(l)).filter((p) => p.tag === "train_step-loss-scale");
  assert.deepEqual(scales.map((p) => p.step), [0, 1, 2, 3, 4]);
  // Each step's scale is the last one, halved after a skipped step, doubled after 2 clean ones.
  const ratios = scales.slice(1).map((p, i) => p.value / scales[i].value);
  assert.ok(ratios.every((r) => r === 0.5 || r === 1 || r === 2), `${ratios}`);
  // Every skipped step but perhaps the last halves the next step's scale.
  const [halvings, skipped] = [ratios.filter((r) => r === 0.5).length, Number(m![1])];
  assert.ok(halvings === skipped || halvings === skipped - 1, `${skipped} skipped, scale ratios ${ratios}`);
  for (const tag of ["train_skipped-steps", "train_loss-scale", "train_step-learning-rate"]) {
    assert.ok(each.jsonl.some((l) => JSON.parse(l).tag === tag), tag);
  }
});

Deno.test({
  name: "200 steps of SimCLR with --half on the demo data set stay finite (GPU)",
  ignore: skipReason("200 steps of SimCLR with --half", noGpu),
  async fn() {
    using dir = tempDir();
    const data = join(dir.path, "data");
    await writeDemoDataset(data);
    // The demo's settings on CUDA: 3000 images in batches of 128 = 23 steps an epoch; 9 epochs = 207 steps.
    const r = await cli([
      "train",
      "--num-replicas",
      "1",
      "--data-dir",
      data,
      "--model-dir",
      join(dir.path, "models"),
      "--log-dir",
      join(dir.path, "runs"),
      "--arch",
      "resnet18",
      "--representation-size",
      "512",
      "--head-latent-size",
      "512",
      "--image-size-override",
      "32",
      "--no-small-stem",
      "--batch-size",
      "128",
      "--epochs",
      "9",
      "--lr",
      "0.05",
      "--optimizer",
      "momentum",
      "--weight-decay",
      "5e-4",
      "--warmup",
      "1",
      "--seed",
      "0",
      "--half",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /\| cuda \| resnet18 .* \| fp16/);
    const train = [
      ...r.stdout.matchAll(/^train-0\[Epoch (\d+)\]\[\d+ samples\]\[[\d.]+ sec\]:\t Loss: (\S+)/gm),
    ];
    assert.equal(train.length, 9, r.stdout);
    assert.ok(train.every((m) => Number.isFinite(Number(m[2]))), r.stdout);
    const skipped = [...r.stdout.matchAll(/^amp-0\[Epoch \d+\]: (\d+) of 23 steps skipped/gm)].map((m) =>
      Number(m[1])
    );
    assert.equal(skipped.length, 9, r.stdout);
    // A few overflows while the scale settles, not a run of skipped steps.
    assert.ok(skipped.reduce((a, b) => a + b) < 20, `skipped per epoch: ${skipped}`);
  },
});
