import assert from "node:assert/strict";
import { resolve } from "../cli/config.ts";
import { PRESETS } from "../cli/presets.ts";
import { abbreviation, MAX_RUN_NAME, pythonFloat, referenceName, runIdentity, runName } from "../train/runname.ts";

// The reference programs' defaults (REFERENCE.md §1), written out here so
// the examples do not depend on how selfsup's Config grows.
const SIMCLR_REFERENCE = {
  method: "simclr" as const,
  task: "multi_augment_image_folder",
  batchSize: 4096,
  epochs: 3000,
  download: 1,
  imageSizeOverride: 224,
  dataDir: "./.datasets",
  uid: "",
  arch: "resnet50",
  representationSize: 2048,
  nceSize: 128,
  headLatentSize: 1024,
  nceTemperature: 0.1,
  weightInitialization: null,
  modelDir: ".models",
  colorJitterStrength: 1.0,
  weightDecay: 1e-6,
  polyakEma: 0,
  convertToSyncBn: false,
  clip: 0,
  lr: 0.3,
  lrUpdateSchedule: "cosine" as const,
  warmup: 10,
  optimizer: "lars_momentum",
  earlyStop: false,
  visdomUrl: null,
  visdomPort: null,
  numReplicas: 1,
  workersPerReplica: 2,
  distributedMaster: null,
  distributedRank: 0,
  distributedPort: 29300,
  debugStep: false,
  seed: null,
  noCuda: false,
  half: false,
};

const BYOL_REFERENCE = (({ nceSize: _n, nceTemperature: _t, ...rest }) => ({
  ...rest,
  method: "byol" as const,
  logDir: "./runs",
  projectionSize: 256,
  headLatentSize: 4096,
  baseDecay: 0.996,
  lr: 0.2,
}))(SIMCLR_REFERENCE);

Deno.test("run name: the reference's verified SimCLR default name (REFERENCE.md §6)", () => {
  assert.equal(
    referenceName(SIMCLR_REFERENCE),
    "_tmaimfolder_bs4096_e3000_iso224_ar50_rs2048_ns128_hls1024_nt0.1_cjs1_wd1e-06_l0.3_luscos_w10_olmom_nr1",
  );
});

Deno.test("run name: the reference's verified BYOL default name (REFERENCE.md §6)", () => {
  assert.equal(
    referenceName(BYOL_REFERENCE),
    "_tmaimfolder_bs4096_e3000_iso224_ar50_rs2048_ps256_hls4096_bd0.996_cjs1_wd1e-06_l0.2_luscos_w10_olmom_nr1",
  );
});

Deno.test("run name: the SLURM example uses the per-replica batch size", () => {
  const slurm = {
    ...SIMCLR_REFERENCE,
    uid: "simclrv00_0",
    epochs: 100,
    dataDir: "/datasets",
    batchSize: 1024,
    convertToSyncBn: true,
    visdomUrl: "http://MY_VISDOM_URL",
    visdomPort: 8097,
    numReplicas: 16,
    distributedMaster: "node1",
    distributedPort: 29301,
    distributedRank: 3,
  };
  assert.equal(
    runName(slurm),
    "simclrv00_0_tmaimfolder_bs64_e100_iso224_ar50_rs2048_ns128_hls1024_nt0.1_cjs1_wd1e-06_ctsb1_l0.3_luscos_w10_olmom_nr16",
  );
});

Deno.test("run name: the reference presets name runs as the reference does", () => {
  for (const [preset, reference] of [["reference-simclr", SIMCLR_REFERENCE], ["reference-byol", BYOL_REFERENCE]] as const) {
    const c = resolve({ numReplicas: 1, uid: "r" }, PRESETS[preset].settings);
    // The BYOL preset keeps the reference's whole-batch loss too, which selfsup's name spells out.
    const extra = preset === "reference-byol" ? "_blreference" : "";
    assert.equal(c.runName, referenceName({ ...reference, uid: "r" }) + extra);
  }
});

Deno.test("run name without --uid: short, no leading _, the same for more epochs, another for other settings", () => {
  const base = { numReplicas: 1, dataDir: "/data/My Photos/" };
  const c = resolve(base);
  assert.match(c.runName, /^simclr-r50-My-Photos-[0-9a-f]{8}$/);
  assert.equal(resolve({ ...base, epochs: 5000 }).runName, c.runName, "epochs are not part of a run's identity");
  assert.notEqual(resolve({ ...base, lr: 0.1 }).runName, c.runName);
  assert.notEqual(resolve({ ...base, dataDir: "/data/other" }).runName, c.runName);
  assert.match(resolve({ ...base, method: "byol", arch: "wide_resnet50_2" }).runName, /^byol-wr50_2-My-Photos-/);
  assert.equal(runIdentity({ ...SIMCLR_REFERENCE, epochs: 1 }), runIdentity({ ...SIMCLR_REFERENCE, epochs: 7 }));
  // With a --uid the name is the reference's, epochs included.
  assert.match(resolve({ ...base, uid: "exp" }).runName, /^exp_tmaimfolder_bs256_e3000_/);
});

Deno.test("run name: non-default values appear, zero values and blacklisted settings do not", () => {
  const name = referenceName({
    ...SIMCLR_REFERENCE,
    seed: 7,
    clip: 0.5,
    smallStem: true,
    weightDecay: 1.5e-6,
    arch: "wide_resnet50_2",
    optimizer: "lars_sgd",
    dataDir: "/elsewhere",
    workersPerReplica: 9,
  });
  assert.match(name, /_awide_r50_2_/);
  assert.match(name, /_wd1\.5e-06_/);
  assert.match(name, /_c0\.5_/);
  assert.match(name, /_olsgd_/);
  assert.match(name, /_s7_/);
  assert.ok(name.endsWith("_ss1"), name);
  assert.ok(!name.includes("elsewhere") && !name.includes("wpr"), name);
  // selfsup's own BYOL loss flag appears only when it is not the default.
  assert.equal(referenceName({ ...BYOL_REFERENCE, byolLoss: "paper" }), referenceName(BYOL_REFERENCE));
  assert.ok(referenceName({ ...BYOL_REFERENCE, byolLoss: "reference" }).endsWith("_nr1_blreference"));
  // Per-view augmentation probabilities: left out at their defaults, else both values.
  assert.equal(
    referenceName({ ...SIMCLR_REFERENCE, blurProb: [0.5, 0.5], solarizeProb: [0, 0] }),
    referenceName(SIMCLR_REFERENCE),
  );
  assert.ok(
    referenceName({ ...BYOL_REFERENCE, blurProb: [1, 0.1], solarizeProb: [0, 0.2] }).endsWith(
      "_nr1_bp1+0.1_sp0+0.2",
    ),
  );
  // Missing keys are skipped like zero values.
  assert.equal(referenceName({ uid: "x", epochs: 5 }), "x_e5");
});

Deno.test("run name: unsafe characters become '-' and long names are cut with a hash", () => {
  assert.equal(runName({ uid: "my run/1", epochs: 2 }), "my-run-1_e2");
  const long = runName({ ...SIMCLR_REFERENCE, uid: "u".repeat(300) });
  assert.equal(long.length, MAX_RUN_NAME);
  assert.match(long, /^u+_[0-9a-f]{8}$/);
  assert.equal(runName({ ...SIMCLR_REFERENCE, uid: "u".repeat(300) }), long, "deterministic");
  assert.notEqual(runName({ ...SIMCLR_REFERENCE, uid: "u".repeat(300), epochs: 5 }), long, "still distinct");
});

Deno.test("run name helpers: abbreviations and Python float formatting", () => {
  assert.equal(abbreviation("imageSizeOverride"), "iso");
  assert.equal(abbreviation("lr"), "l");
  assert.deepEqual(
    [1e-6, 0.1, 0.996, 1.5e-5, 0.0001, 12345.5, 1e16, 2.5e-10].map(pythonFloat),
    ["1e-06", "0.1", "0.996", "1.5e-05", "0.0001", "12345.5", "1e+16", "2.5e-10"],
  );
});
