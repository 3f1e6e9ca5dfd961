/**
 * slurm/run.sh on a real SLURM: Debian's slurm-wlm (installed here with
 * apt-get when missing and possible), a one-node slurmctld + slurmd on
 * loopback with a throw-away configuration (SLURM_NOTES), a 2-task CPU job
 * submitted with sbatch; both tasks must train as one process group. Then
 * the reference's array mode: two array elements of one task each.
 * Skipped, saying why, where SLURM cannot be installed.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { tempDir } from "./helpers.ts";

const ROOT = join(import.meta.dirname!, "..");

function has(cmd: string): boolean {
  return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null", stderr: "null" }).outputSync().success;
}

/** SLURM's daemons and clients, installed from Debian if need be; null when available, else why not. */
async function ensureSlurm(): Promise<string | null> {
  const tools = ["slurmctld", "slurmd", "sbatch", "squeue", "scontrol"];
  if (tools.every(has)) return null;
  if (Deno.uid() !== 0 || !has("apt-get")) return "slurm-wlm is not installed, and installing it needs root and apt-get";
  const apt = (args: string[]) =>
    new Deno.Command("apt-get", { args, env: { DEBIAN_FRONTEND: "noninteractive" }, stdout: "null", stderr: "piped" }).output();
  let out = await apt(["install", "-y", "-qq", "slurm-wlm"]);
  if (!out.success) {
    await apt(["update", "-qq"]);
    out = await apt(["install", "-y", "-qq", "slurm-wlm"]);
  }
  if (!out.success) return `apt-get install slurm-wlm failed: ${new TextDecoder().decode(out.stderr).trim().split("\n").at(-1)}`;
  return tools.every(has) ? null : "slurm-wlm installed, but its commands are not on PATH";
}

const missing = await ensureSlurm();
if (missing) console.warn(`dist_slurm_test: skipped: ${missing}`);

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A one-node cluster on loopback, its files under `dir`. */
class Cluster implements AsyncDisposable {
  readonly env: Record<string, string>;
  #daemons: Deno.ChildProcess[] = [];

  constructor(readonly dir: string) {
    const d = (p: string) => join(dir, p);
    for (const p of ["etc", "state", "spool", "run", "log"]) Deno.mkdirSync(d(p), { recursive: true });
    const user = Deno.uid() === 0 ? "root" : Deno.env.get("USER") ?? "root";
    const cpus = Math.max(2, navigator.hardwareConcurrency);
    Deno.writeTextFileSync(
      d("etc/slurm.conf"),
      [
        "ClusterName=selfsuptest",
        "SlurmctldHost=localhost",
        `SlurmctldPort=${freePort()}`,
        `SlurmdPort=${freePort()}`,
        `SlurmUser=${user}`,
        `SlurmdUser=${user}`,
        "AuthType=auth/none",
        "CredType=cred/none",
        `StateSaveLocation=${d("state")}`,
        `SlurmdSpoolDir=${d("spool")}`,
        `SlurmctldPidFile=${d("run/slurmctld.pid")}`,
        `SlurmdPidFile=${d("run/slurmd.pid")}`,
        `SlurmctldLogFile=${d("log/slurmctld.log")}`,
        `SlurmdLogFile=${d("log/slurmd.log")}`,
        "MailProg=/bin/true",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "SelectType=select/cons_tres",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerParameters=batch_sched_delay=0",
        `NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=4000 State=UNKNOWN`,
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
        "",
      ].join("\n"),
    );
    this.env = { SLURM_CONF: d("etc/slurm.conf") };
  }

  async start(): Promise<void> {
    const daemon = (cmd: string, args: string[]) =>
      new Deno.Command(cmd, { args, env: this.env, stdout: "null", stderr: "null" }).spawn();
    this.#daemons.push(daemon("slurmctld", ["-D"]), daemon("slurmd", ["-D", "-N", "localhost"]));
    const t0 = performance.now();
    while ((await this.run("sinfo", ["-h", "-o", "%T"])).trim() !== "idle") {
      if (performance.now() - t0 > 60_000) throw new Error(`the test cluster did not come up: ${Deno.readTextFileSync(join(this.dir, "log/slurmctld.log")).slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<string> {
    const out = await new Deno.Command(cmd, { args, env: { ...this.env, ...env }, stdout: "piped", stderr: "piped" }).output();
    const text = new TextDecoder().decode(out.stdout);
    if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
    return text;
  }

  /** Submits with `sbatch --wait`; returns the job's output. */
  async submit(args: string[], output: string): Promise<{ ok: boolean; text: string }> {
    const out = await new Deno.Command("sbatch", {
      args: ["--wait", `--output=${output}`, ...args],
      env: { ...this.env, SELFSUP_ROOT: ROOT, SELFSUP_SKIP_BUILD: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = (() => {
      try {
        return Deno.readTextFileSync(output);
      } catch {
        return "";
      }
    })();
    return { ok: out.success, text: `${text}\n${new TextDecoder().decode(out.stderr)}` };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    // Jobs first (none should be left), then the node, then the controller.
    try {
      await this.run("scancel", ["--user", Deno.uid() === 0 ? "root" : Deno.env.get("USER") ?? "root"]);
    } catch { /* the controller may be down already */ }
    for (const d of this.#daemons.reverse()) {
      try {
        d.kill("SIGTERM");
      } catch { /* exited */ }
      await d.status;
    }
  }
}

const TRAIN = (dir: string) => [
  "--no-cuda", "--data-dir", join(dir, "data"), "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs"),
  "-a", "resnet18", "--representation-size", "512", "--head-latent-size", "16", "--nce-size", "8", "--small-stem",
  "--image-size-override", "8", "--batch-size", "8", "--epochs", "2", "--warmup", "0", "--optimizer", "momentum",
  "--lr", "0.01", "--workers-per-replica", "1", "--distributed-timeout", "60",
];

/** The lines of replica `rank`, whether srun labelled them ("0: ") or not. */
function linesOf(text: string, rank: number, labelled: boolean): string[] {
  const lines = text.split("\n");
  return labelled ? lines.filter((l) => l.startsWith(`${rank}: `)).map((l) => l.slice(`${rank}: `.length)) : lines;
}

function trainedTogether(lines: string[][], how: string): void {
  lines.forEach((ls, r) => {
    const me = ls.find((l) => l.startsWith(`replica ${r} of 2 (${how})`));
    assert.ok(me, `rank ${r} joined as replica ${r} of 2 (${how}):\n${ls.join("\n")}`);
  });
  const where = lines.map((ls, r) => ls.find((l) => l.startsWith(`replica ${r} of 2`))!.split("rendezvous ")[1]);
  assert.equal(where[0], where[1], "one rendezvous for both");
  // Both print the group's metrics: equal numbers, every epoch.
  for (const pass of ["train", "test"]) {
    for (const epoch of [1, 2]) {
      const loss = lines.map((ls, r) => ls.find((l) => l.startsWith(`${pass}-${r}[Epoch ${epoch}]`))?.split("Loss: ")[1]);
      assert.ok(loss[0] !== undefined && loss[0] === loss[1], `${pass} epoch ${epoch}: ${loss.join(" vs ")}`);
    }
  }
}

Deno.test({
  name: "slurm/run.sh: sbatch of 2 CPU tasks trains one process group (real slurmctld + slurmd)",
  ignore: missing !== null,
  async fn() {
    using tmp = tempDir("selfsup-slurm-");
    await writeDemoDataset(join(tmp.path, "data"), { seed: 4, trainPerClass: 2, testPerClass: 1, size: 16 });
    await using cluster = new Cluster(join(tmp.path, "cluster"));
    await cluster.start();

    const job = await cluster.submit(
      ["--ntasks=2", "--ntasks-per-node=2", "--cpus-per-task=1", "--gres=none", "--mem-per-cpu=1000", "--time=10", join(ROOT, "slurm", "run.sh"), ...TRAIN(tmp.path)],
      join(tmp.path, "job.out"),
    );
    assert.ok(job.ok, job.text);
    if (Deno.env.get("SELFSUP_TEST_VERBOSE")) console.log(job.text);
    trainedTogether([0, 1].map((r) => linesOf(job.text, r, true)), "slurm");
    assert.match(job.text, /^0: checkpoint: /m, "rank 0 saved the run");

    // The reference's mode: one task per array element, rank = the element.
    const array = await cluster.submit(
      ["--array=0-1", "--ntasks=1", "--ntasks-per-node=1", "--cpus-per-task=1", "--gres=none", "--mem-per-cpu=1000", "--time=10",
        join(ROOT, "slurm", "run.sh"), "--num-replicas", "2", "--uid", "array", ...TRAIN(tmp.path)],
      join(tmp.path, "array-%a.out"),
    );
    const texts = [0, 1].map((a) => Deno.readTextFileSync(join(tmp.path, `array-${a}.out`)));
    assert.ok(array.ok, texts.join("\n"));
    trainedTogether(texts.map((t) => linesOf(t, 0, true)), "slurm-array");
  },
});
