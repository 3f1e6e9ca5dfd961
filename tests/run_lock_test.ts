/**
 * No two copies on one run: the run lock in --model-dir (train/runlock.ts).
 * A second copy refuses with one line naming the holder; a lock whose
 * holder is gone (a dead pid here, an expired heartbeat elsewhere, a
 * requeued SLURM job) is taken over.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type Holder, LEASE_S, lockPath, me, RunLock, RunLockError } from "../train/runlock.ts";
import { tempDir } from "./helpers.ts";
import { cli, filesIn, MAIN, metricsWithoutTime, readUntil, runNameOf, tinyArgs, tinyData } from "./run_helpers.ts";

/** A lock file as another process would have left it, `ageS` seconds old. */
function plantLock(dir: string, name: string, holder: Partial<Holder>, ageS = 0): void {
  const path = lockPath(dir, name);
  Deno.mkdirSync(dir, { recursive: true });
  Deno.writeTextFileSync(path, JSON.stringify({ ...me(), ...holder }) + "\n");
  const t = new Date(Date.now() - ageS * 1000);
  Deno.utimeSync(path, t, t);
}

/** A pid that belonged to a process that has exited. */
async function deadPid(): Promise<number> {
  const p = new Deno.Command("true").spawn();
  await p.status;
  return p.pid;
}

Deno.test("two copies of one run: the second refuses with one line naming the holder, the first is undisturbed", async () => {
  using dir = tempDir();
  await tinyData(dir.path);
  const args = tinyArgs(dir.path, ["--epochs", "4"]);
  const name = await runNameOf(args);
  const first = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...args],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const lock = lockPath(join(dir.path, "models"), name);
  // "logging to …" comes once the run holds its lock.
  const stdout = first.stdout.pipeThrough(new TextDecoderStream()).getReader();
  await readUntil(stdout, /logging to /);
  const second = await cli(args);
  while (!(await stdout.read()).done) { /* the first run's progress */ }
  const status = await first.status;
  assert.equal(status.code, 0);
  assert.equal(second.code, 1);
  const lines = second.stderr.trim().split("\n");
  assert.equal(lines.length, 1, second.stderr);
  assert.match(
    lines[0],
    new RegExp(`^selfsup: run ${name} is already running: pid ${first.pid} on ${Deno.hostname()}, started \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z holds ${lock}`),
  );
  // The first run's outputs are its own: one checkpoint, no duplicated log points, the lock gone.
  const models = filesIn(join(dir.path, "models"));
  assert.deepEqual(models.filter((f) => f.startsWith(`${name}.last`)), [`${name}.last-20.safetensors`, `${name}.last.json`]);
  assert.equal(models.filter((f) => f.startsWith(`${name}.best-`)).length, 1);
  assert.equal(models.length, 4, models.join(" "));
  const points = metricsWithoutTime(join(dir.path, "runs", name, "metrics.jsonl")).map((m) => `${m.tag}@${m.step}`);
  assert.equal(new Set(points).size, points.length, "no (tag, step) twice");
});

Deno.test("run lock: a second holder in the same machine is refused while the first lives, and gets it once released", () => {
  using dir = tempDir();
  const a = RunLock.acquire(dir.path, "r", () => {});
  assert.throws(() => RunLock.acquire(dir.path, "r", () => {}), (e) => e instanceof RunLockError && /pid \d+ on .* holds/.test(e.message));
  a.release();
  assert.deepEqual(filesIn(dir.path), [], "released: no lock, no helper files");
  RunLock.acquire(dir.path, "r", () => {}).release();
});

Deno.test("run lock: the lock of a killed run (its pid gone) is stale and taken over", async () => {
  using dir = tempDir();
  plantLock(dir.path, "r", { pid: await deadPid() });
  const said: string[] = [];
  const lock = RunLock.acquire(dir.path, "r", (l) => said.push(l));
  assert.match(said.join("\n"), /taking over the stale lock of r \(process \d+ is gone\)/);
  assert.equal(JSON.parse(Deno.readTextFileSync(lock.path)).pid, Deno.pid);
  lock.release();
});

Deno.test("run lock: another machine's lock holds until its heartbeat is older than the lease", () => {
  using dir = tempDir();
  plantLock(dir.path, "r", { host: "node17", machine: "other", pid: 4242 }, 60);
  assert.throws(
    () => RunLock.acquire(dir.path, "r", () => {}),
    (e) => e instanceof RunLockError && /pid 4242 on node17, started .* the lock expires \d+ s after its last heartbeat/.test(e.message),
  );
  plantLock(dir.path, "r", { host: "node17", machine: "other", pid: 4242 }, LEASE_S + 60);
  const said: string[] = [];
  RunLock.acquire(dir.path, "r", (l) => said.push(l)).release();
  assert.match(said[0], /no heartbeat for \d+ s/);
});

Deno.test("run lock: a requeued SLURM job takes over its own job's lock; another copy in the same job does not", () => {
  using dir = tempDir();
  const held = { host: "node17", machine: "other", pid: 4242, slurmJob: "9001", slurmRestart: 0 };
  plantLock(dir.path, "r", held);
  assert.throws(() => RunLock.acquire(dir.path, "r", () => {}, { SLURM_JOB_ID: "9001" }), RunLockError);
  assert.throws(() => RunLock.acquire(dir.path, "r", () => {}, { SLURM_JOB_ID: "9002", SLURM_RESTART_COUNT: "1" }), RunLockError);
  const said: string[] = [];
  RunLock.acquire(dir.path, "r", (l) => said.push(l), { SLURM_JOB_ID: "9001", SLURM_RESTART_COUNT: "1" }).release();
  assert.match(said[0], /SLURM requeued job 9001/);
});

Deno.test("run lock: the holder's heartbeat renews the lock's mtime, and a holder whose lock was taken learns it", async () => {
  using dir = tempDir();
  const lock = RunLock.acquire(dir.path, "r", () => {}, {}, 0.2);
  const old = new Date(Date.now() - 3_600_000);
  Deno.utimeSync(lock.path, old, old);
  await new Promise((r) => setTimeout(r, 500));
  assert.ok(Deno.statSync(lock.path).mtime!.getTime() > Date.now() - 60_000, "mtime renewed");
  assert.equal(lock.lost, null);
  plantLock(dir.path, "r", { host: "node17", machine: "other", pid: 4242 });
  await new Promise((r) => setTimeout(r, 500));
  assert.match(lock.lost ?? "", /taken by another process \(pid 4242 on node17/);
  lock.release();
  assert.equal(JSON.parse(Deno.readTextFileSync(lock.path)).host, "node17", "release leaves another's lock alone");
});
