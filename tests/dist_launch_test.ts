/**
 * Where rank, world size, master and port come from (cli/launch.ts):
 * SLURM node lists, the precedence flags > torchrun > SLURM > preset, and
 * the single-node launcher.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DEFAULTS, resolve } from "../cli/config.ts";
import {
  expandNodelist,
  launchLocal,
  type NodeLookup,
  resolveLaunch,
  slurmPort,
} from "../cli/launch.ts";
import { replicaDevice, threadsPerReplica } from "../train/replica.ts";
import { writeDemoDataset } from "../ffi/native.ts";
import { tempDir } from "./helpers.ts";

const MAIN = join(import.meta.dirname!, "..", "cli", "main.ts");

const NODELISTS: [string, string[]][] = [
  ["node[01-03,07]", ["node01", "node02", "node03", "node07"]],
  ["a1,b[2-3]", ["a1", "b2", "b3"]],
  ["gpu-[001-002]-ib", ["gpu-001-ib", "gpu-002-ib"]],
  ["rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]],
  ["x[9-11]", ["x9", "x10", "x11"]],
  ["n[08-10]", ["n08", "n09", "n10"]],
  ["n[1,3-4]c[0-1],z", ["n1c0", "n1c1", "n3c0", "n3c1", "n4c0", "n4c1", "z"]],
  ["localhost", ["localhost"]],
  ["n[1-2],m[3],k", ["n1", "n2", "m3", "k"]],
];

Deno.test("SLURM node lists expand in full: ranges, zero padding, several bracket groups, comma lists", () => {
  for (const [list, hosts] of NODELISTS) assert.deepEqual(expandNodelist(list), hosts, list);
  for (const bad of ["node[1-", "node]1[", "node[a-b]", "node[3-1]"]) {
    assert.throws(() => expandNodelist(bad), /bad SLURM node list/, bad);
  }
});

Deno.test("node lists expand as scontrol show hostnames does", { ignore: !hasCommand("scontrol") }, () => {
  // scontrol needs a configuration, even a throw-away one, to parse lists.
  // SLURM 22.05 rejects a suffix after the only bracket group
  // (gpu-[001-002]-ib) that newer releases accept: such lists are skipped.
  using tmp = tempDir("selfsup-scontrol-");
  const conf = join(tmp.path, "slurm.conf");
  Deno.writeTextFileSync(
    conf,
    "ClusterName=x\nSlurmctldHost=localhost\nNodeName=localhost CPUs=1\nPartitionName=d Nodes=localhost\n",
  );
  let compared = 0;
  for (const [list, hosts] of NODELISTS) {
    const out = new Deno.Command("scontrol", {
      args: ["show", "hostnames", list],
      env: { SLURM_CONF: conf },
      stdout: "piped",
      stderr: "piped",
    })
      .outputSync();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success || text === "") continue; // "Invalid hostlist" (on stderr, status 0)
    assert.deepEqual(text.split("\n"), hosts, list);
    compared++;
  }
  assert.ok(compared >= NODELISTS.length - 1, `scontrol parsed only ${compared} lists`);
});

function hasCommand(name: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${name}`], stdout: "null", stderr: "null" })
    .outputSync().success;
}

const noLookup: NodeLookup = () => assert.fail("squeue must not be asked");
const launch = (given: Record<string, unknown>, env: Record<string, string>, base = {}, lookup = noLookup) =>
  resolveLaunch(given, env, base, DEFAULTS, lookup);

const TORCHRUN = {
  RANK: "1",
  WORLD_SIZE: "4",
  LOCAL_RANK: "1",
  LOCAL_WORLD_SIZE: "2",
  MASTER_ADDR: "node7",
  MASTER_PORT: "29511",
};
const SRUN = {
  SLURM_JOB_ID: "123456",
  SLURM_STEP_ID: "0",
  SLURM_PROCID: "3",
  SLURM_NTASKS: "4",
  SLURM_LOCALID: "1",
  SLURM_NODEID: "1",
  SLURM_TASKS_PER_NODE: "2(x2)",
  SLURM_JOB_NODELIST: "gpu-[003-004]",
  SLURM_NODELIST: "ignored-[1-2]",
};

Deno.test("explicit flags alone, as the reference passes them", () => {
  const l = launch({
    numReplicas: 4,
    distributedRank: 2,
    distributedMaster: "tcp://node1",
    distributedPort: 1234,
  }, {});
  assert.deepEqual(l, {
    worldSize: 4,
    rank: 2,
    localRank: 2,
    localWorldSize: 1,
    master: "node1",
    port: 1234,
    launchedBy: "flags",
  });
  assert.throws(
    () => launch({ numReplicas: 2, distributedMaster: "node1:29500" }, {}),
    /give the host alone/,
  );
});

Deno.test("a torchrun environment gives every field", () => {
  assert.deepEqual(launch({}, TORCHRUN), {
    worldSize: 4,
    rank: 1,
    localRank: 1,
    localWorldSize: 2,
    master: "node7",
    port: 29511,
    launchedBy: "torchrun",
  });
});

Deno.test("SLURM inside srun: rank, size, local rank, first node of the job's list, a port from the job id", () => {
  assert.deepEqual(launch({}, SRUN), {
    worldSize: 4,
    rank: 3,
    localRank: 1,
    localWorldSize: 2,
    master: "gpu-003",
    port: slurmPort(123456),
    launchedBy: "slurm",
  });
  const { SLURM_JOB_NODELIST: _, ...older } = SRUN;
  assert.equal(launch({}, older).master, "ignored-1", "SLURM_NODELIST when SLURM_JOB_NODELIST is absent");
  // The batch script itself (no job step) is not a replica.
  const { SLURM_STEP_ID: __, ...batchScript } = SRUN;
  assert.equal(launch({}, batchScript, { numReplicas: 1 }).launchedBy, "single");
});

Deno.test("precedence: flags over torchrun over SLURM over the preset", () => {
  // Flags name the master and port even inside torchrun or SLURM.
  const l = launch({ distributedMaster: "tcp://head", distributedPort: 4000 }, { ...SRUN, ...TORCHRUN });
  assert.equal(l.master, "head");
  assert.equal(l.port, 4000);
  // torchrun (e.g. one srun task per node running torchrun) beats SLURM.
  assert.equal(l.rank, 1);
  assert.equal(l.worldSize, 4);
  assert.equal(l.launchedBy, "torchrun");
  // Flags that agree with the environment are fine; contradicting ones cannot meet.
  assert.equal(launch({ numReplicas: 4, distributedRank: 3 }, SRUN).rank, 3);
  assert.throws(
    () => launch({ numReplicas: 8 }, SRUN),
    /--num-replicas 8 contradicts SLURM_NTASKS\/SLURM_PROCID \(4 processes\)/,
  );
  assert.throws(
    () => launch({ distributedRank: 0 }, TORCHRUN),
    /--distributed-rank 0 contradicts WORLD_SIZE\/RANK \(rank 1\)/,
  );
  // The environment beats a preset; the preset beats the defaults.
  assert.equal(launch({}, TORCHRUN, { numReplicas: 1 }).worldSize, 4);
  assert.equal(launch({}, {}, { numReplicas: 1 }).worldSize, 1);
  assert.equal(launch({}, {}).worldSize, DEFAULTS.numReplicas);
  assert.equal(launch({}, {}).port, DEFAULTS.distributedPort);
  assert.equal(launch({}, { MASTER_PORT: "777" }).port, 777);
});

Deno.test("the reference's SLURM array mode: rank from the task id, master from task 0's node", () => {
  const env = {
    SLURM_JOB_ID: "501",
    SLURM_ARRAY_JOB_ID: "500",
    SLURM_ARRAY_TASK_ID: "3",
    SLURM_NTASKS: "1",
    SLURM_STEP_ID: "0",
    SLURM_PROCID: "0",
  };
  const asked: string[] = [];
  const lookup: NodeLookup = (job) => (asked.push(job), "node[07-08]");
  assert.deepEqual(launch({ numReplicas: 4 }, env, {}, lookup), {
    worldSize: 4,
    rank: 3,
    localRank: 0,
    localWorldSize: 1,
    master: "node07",
    port: slurmPort(500),
    launchedBy: "slurm-array",
  });
  assert.deepEqual(asked, ["500_0"]);
  // Without --num-replicas an array job is a sweep of independent runs.
  assert.equal(launch({}, env, { numReplicas: 1 }).launchedBy, "single");
});

Deno.test("the resolved configuration carries the launch; a world without a master is refused", () => {
  const c = resolve({ batchSize: 64 }, {}, TORCHRUN);
  assert.equal(c.worldSize, 4);
  assert.equal(c.numReplicas, 4);
  assert.equal(c.rank, 1);
  assert.equal(c.localRank, 1);
  assert.equal(c.master, "node7");
  assert.equal(c.port, 29511);
  assert.equal(c.batchSizePerReplica, 16);
  assert.throws(() => resolve({ numReplicas: 2 }, {}, TORCHRUN), /--num-replicas 2 contradicts/);
});

Deno.test("CPU threads per replica: SLURM's --cpus-per-task, else the cores shared", () => {
  assert.equal(threadsPerReplica({ localWorldSize: 2 }, { SLURM_CPUS_PER_TASK: "3" }, 8), 3);
  assert.equal(threadsPerReplica({ localWorldSize: 2 }, {}, 8), 4);
  assert.equal(threadsPerReplica({ localWorldSize: 3 }, {}, 2), 1);
  assert.equal(threadsPerReplica({ localWorldSize: 1 }, {}, 8), 0);
});

Deno.test("two replicas on one GPU: a one-line error before any rendezvous, naming --nproc and --no-cuda", () => {
  const torchrun = { worldSize: 2, localRank: 1, localWorldSize: 2, launchedBy: "torchrun" as const, noCuda: false };
  const oneGpu = { cuda: true, cudaDevices: 1 };
  assert.throws(
    () => replicaDevice(torchrun, oneGpu),
    /^LaunchError: 2 replicas on this machine, 1 GPU: NCCL needs one GPU per replica; start at most 1 \(--nproc, --nproc-per-node\) or train them on the CPU with Gloo \(--no-cuda\)$/,
  );
  // --no-cuda, or no GPU at all: Gloo on the CPU.
  assert.equal(replicaDevice({ ...torchrun, noCuda: true }, oneGpu), "cpu");
  assert.equal(replicaDevice(torchrun, { cuda: false, cudaDevices: 0 }), "cpu");
  // As many GPUs as replicas: one each, by local rank.
  assert.equal(replicaDevice(torchrun, { cuda: true, cudaDevices: 2 }), "cuda:1");
  assert.equal(replicaDevice({ ...torchrun, localRank: 3, localWorldSize: 4 }, { cuda: true, cudaDevices: 8 }), "cuda:3");
  // One replica takes the GPU libtorch picks.
  assert.equal(replicaDevice({ ...torchrun, worldSize: 1, localWorldSize: 1, localRank: 0 }, oneGpu), "cuda");
  // SLURM may give each task its own GPU (CUDA_VISIBLE_DEVICES): each sees one, at index 0.
  assert.equal(replicaDevice({ ...torchrun, launchedBy: "slurm", localRank: 5, localWorldSize: 8 }, oneGpu), "cuda:0");
});

Deno.test("launchLocal gives each replica its rank, and stops the others when one fails", async () => {
  using tmp = tempDir("selfsup-launch-");
  // Rank 1 fails once every rank has written its environment (the others
  // would sleep for a minute): failing at once could stop a rank that had
  // not yet written it, on a busy machine. Each file appears whole (mv).
  // `exec`: the signal must reach the sleep itself, or an orphaned sleep
  // keeps the relayed pipes open (selfsup's own ranks have no such grandchildren).
  const script = `env > "${tmp.path}/tmp.$RANK" && mv "${tmp.path}/tmp.$RANK" "${tmp.path}/env.$RANK"; ` +
    `if [ "$RANK" = 1 ]; then n=0; while [ $n -lt 600 ] && { [ ! -f "${tmp.path}/env.0" ] || [ ! -f "${tmp.path}/env.2" ]; }; do sleep 0.05; n=$((n + 1)); done; exit 3; fi; ` +
    `exec sleep 60`;
  const t0 = performance.now();
  const lines: string[] = [];
  const code = await launchLocal(3, ["-c", script], {
    command: ["sh"],
    port: 4321,
    graceMs: 2000,
    log: (l) => lines.push(l),
  });
  assert.equal(code, 3);
  // The others would sleep 60 s; stopped, they end within the grace period (a wide bound on a busy machine).
  assert.ok(performance.now() - t0 < 45_000, "the sleeping ranks were stopped");
  assert.match(lines.join("\n"), /rank 1 exited with code 3; stopping the other ranks/);
  for (const r of [0, 1, 2]) {
    const env = Deno.readTextFileSync(join(tmp.path, `env.${r}`));
    for (
      const kv of [
        `RANK=${r}`,
        "WORLD_SIZE=3",
        `LOCAL_RANK=${r}`,
        "LOCAL_WORLD_SIZE=3",
        "MASTER_ADDR=127.0.0.1",
        "MASTER_PORT=4321",
      ]
    ) {
      assert.match(env, new RegExp(`^${kv}$`, "m"), `rank ${r}: ${kv}`);
    }
  }
});

const torchrun = join(Deno.env.get("SELFSUP_PYTHON") ?? "", "..", "torchrun");
const hasTorchrun = (() => {
  try {
    return Deno.statSync(torchrun).isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "torchrun --no-python starts replicas that meet at its agent's store",
  ignore: !hasTorchrun,
  async fn() {
    using tmp = tempDir("selfsup-torchrun-");
    const data = join(tmp.path, "data");
    await writeDemoDataset(data, { seed: 2, trainPerClass: 2, testPerClass: 1, size: 16 });
    const out = await new Deno.Command(torchrun, {
      // deno-fmt-ignore
      args: [
        "--nproc-per-node", "2", `--master-port=${freePort()}`, "--no-python",
        Deno.execPath(), "run", "--allow-all", "--quiet", MAIN, "train", ...smallRun(tmp.path, data),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    // The agent serves MASTER_PORT itself: a rank 0 that served it too would fail with "port in use".
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    for (const r of [0, 1]) assert.match(stdout, new RegExp(`^replica ${r} of 2 \\(torchrun\\)`, "m"));
  },
});

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Flags of a tiny CPU run (one epoch of 20 images in 8-px crops). */
function smallRun(dir: string, data: string): string[] {
  // deno-fmt-ignore
  return [
    "--data-dir", data, "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs"), "-a", "resnet18",
    "--representation-size", "512", "--head-latent-size", "16", "--nce-size", "8", "--small-stem", "--image-size-override", "8",
    "--batch-size", "8", "--epochs", "1", "--warmup", "0", "--optimizer", "momentum", "--lr", "0.01", "--workers-per-replica", "1",
    "--no-cuda",
  ];
}

Deno.test("selfsup launch trains two replicas as one group (CLI)", async () => {
  using tmp = tempDir("selfsup-launch-cli-");
  const data = join(tmp.path, "data");
  await writeDemoDataset(data, { seed: 2, trainPerClass: 2, testPerClass: 1, size: 16 });
  const flags = smallRun(tmp.path, data);
  const run = (args: string[]) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", MAIN, "launch", "--nproc", "2", ...args],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
  const printed = await run(["train", "--print-config", ...flags]);
  const text = new TextDecoder().decode(printed.stdout);
  const ranks = [
    text.split("\n").filter((l) => !l.startsWith("[rank 1] ")),
    text.split("\n").filter((l) => l.startsWith("[rank 1] ")).map((l) => l.slice(9)),
  ]
    .map((ls) => JSON.parse(ls.join("\n")));
  assert.deepEqual(ranks.map((c) => [c.rank, c.worldSize, c.localRank, c.master, c.launchedBy]), [[
    0,
    2,
    0,
    "127.0.0.1",
    "torchrun",
  ], [1, 2, 1, "127.0.0.1", "torchrun"]]);
  assert.equal(ranks[0].port, ranks[1].port);
  assert.equal(ranks[0].batchSizePerReplica, 4);

  const out = await run(["train", ...flags]);
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  // Both ranks print the metrics of the whole group: the same numbers.
  const summary = (r: number) =>
    stdout.match(new RegExp(`train-${r}\\[Epoch 1\\]\\[(\\d+) samples\\].*Loss: ([\\d.]+)`))!;
  assert.equal(summary(0)[2], summary(1)[2]);
  assert.equal(summary(0)[1], "16", "one epoch of the whole group: 2 steps of 8");
  const test = (r: number) =>
    stdout.match(new RegExp(`test-${r}\\[Epoch 1\\]\\[(\\d+) samples\\].*Loss: ([\\d.]+)`))!;
  assert.deepEqual(test(0).slice(1), test(1).slice(1));
  assert.equal(test(0)[1], "10", "the test set is sharded and every image counted once");
});

Deno.test("replicas stop after the same step, resume together from rank 0's checkpoint, and refuse different ones", async () => {
  using tmp = tempDir("selfsup-launch-resume-");
  const data = join(tmp.path, "data");
  await writeDemoDataset(data, { seed: 2, trainPerClass: 2, testPerClass: 1, size: 16 });
  const flags = [...smallRun(tmp.path, data), "--epochs", "2"];
  const launch = (env: Record<string, string> = {}) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", MAIN, "launch", "--nproc", "2", "train", ...flags],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
  // Rank 1 alone is signalled (after its third step); the group stops together.
  const stopped = await launch({ SELFSUP_SIGTERM_AFTER_STEPS: "3", SELFSUP_SIGTERM_RANK: "1" });
  assert.equal(stopped.code, 0, new TextDecoder().decode(stopped.stderr));
  const text = new TextDecoder().decode(stopped.stdout);
  const at = (prefix: string) => text.match(new RegExp(`^${prefix}saved the last checkpoint at (epoch \\d+, batch \\d+)`, "m"))?.[1];
  assert.ok(at("") !== undefined && at("") === at("\\[rank 1\\] "), `both stopped after the same step:\n${text}`);
  assert.notEqual(at(""), "epoch 3, batch 0", "stopped before the end");

  const out = await launch();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.match(stdout, new RegExp(`^resumed .* at ${at("")}`, "m"));
  assert.match(stdout, new RegExp(`^\\[rank 1\\] resumed .* at ${at("")}`, "m"));
  const epoch2 = (r: number) => stdout.match(new RegExp(`train-${r}\\[Epoch 2\\].*Loss: ([\\d.]+)`))?.[1];
  assert.ok(epoch2(0) !== undefined && epoch2(0) === epoch2(1), stdout);

  // Rank 1 looking in another (empty) folder would train from scratch beside a resumed rank 0.
  const port = String(freePort());
  const rank = (r: number, models: string) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", MAIN, "train", ...flags, "--model-dir", models],
      env: { RANK: String(r), WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: port },
      stdout: "piped",
      stderr: "piped",
    }).output();
  const [a, b] = await Promise.all([rank(0, join(tmp.path, "models")), rank(1, join(tmp.path, "elsewhere"))]);
  for (const o of [a, b]) {
    assert.equal(o.code, 1, new TextDecoder().decode(o.stderr));
    assert.match(
      new TextDecoder().decode(o.stderr),
      /the replicas resumed at different steps \(0 to \d+\): --model-dir .* must be one folder all ranks share/,
    );
  }
});
