/**
 * Where a process's place among the replicas comes from, and the
 * single-node launcher that replaces the reference's `mp.spawn`.
 *
 * Each of rank, world size, master and port is taken from the first of
 * these that gives it (docs/DISTRIBUTED.md):
 *
 * 1. explicit flags: `--num-replicas`, `--distributed-rank`,
 *    `--distributed-master`, `--distributed-port` (the reference's);
 * 2. a torchrun-style environment: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
 *    `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` (also what
 *    `selfsup launch` sets);
 * 3. SLURM, inside `srun`: `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
 *    the master is the first host of `SLURM_JOB_NODELIST` (or
 *    `SLURM_NODELIST`), the port 20000 + job id mod 10000;
 * 4. the reference's SLURM array mode (one task per array element, with
 *    `--num-replicas` given): rank `SLURM_ARRAY_TASK_ID`, master the node
 *    of array task 0 (asked of `squeue`, as the reference's slurm/run.sh);
 * 5. the preset (`selfsup demo`) and the defaults.
 *
 * ```ts
 * expandNodelist("node[01-03,07],login"); // ["node01", "node02", "node03", "node07", "login"]
 * ```
 *
 * @module
 */
import type { Launch, LaunchSource, Settings } from "../train/config.ts";
import { type Env, envInt, LaunchError } from "../train/replica.ts";

export { type Env, LaunchError } from "../train/replica.ts";
export type { Launch, LaunchSource } from "../train/config.ts";

/**
 * Expands a SLURM hostlist expression: comma-separated hosts, each with
 * any number of bracket groups of numbers and ranges that keep their zero
 * padding (`gpu-[001-002]-ib`, `rack[1-2]-n[01-02]`). Several groups
 * expand left to right, the last one fastest, as `scontrol show hostnames`.
 */
export function expandNodelist(list: string): string[] {
  const hosts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i <= list.length; i++) {
    const c = list[i];
    if (c === "[") depth++;
    else if (c === "]") depth--;
    if (depth < 0) throw new LaunchError(`bad SLURM node list ${JSON.stringify(list)}: unmatched ]`);
    if (i === list.length && depth !== 0) {
      throw new LaunchError(`bad SLURM node list ${JSON.stringify(list)}: unmatched [`);
    }
    if ((c === "," && depth === 0) || i === list.length) {
      const host = list.slice(start, i).trim();
      if (host) hosts.push(...expandHost(host, list));
      start = i + 1;
    }
  }
  return hosts;
}

function expandHost(host: string, list: string): string[] {
  const open = host.indexOf("[");
  if (open < 0) return [host];
  const close = host.indexOf("]", open);
  const prefix = host.slice(0, open);
  const rest = expandHost(host.slice(close + 1), list);
  const out: string[] = [];
  for (const item of host.slice(open + 1, close).split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(item.trim());
    if (!m) {
      throw new LaunchError(
        `bad SLURM node list ${JSON.stringify(list)}: ${JSON.stringify(item)} is not a number or range`,
      );
    }
    const [lo, hi] = [Number(m[1]), Number(m[2] ?? m[1])];
    if (hi < lo) {
      throw new LaunchError(`bad SLURM node list ${JSON.stringify(list)}: range ${item} runs backwards`);
    }
    const width = m[1].length;
    for (let n = lo; n <= hi; n++) {
      for (const tail of rest) out.push(prefix + String(n).padStart(width, "0") + tail);
    }
  }
  return out;
}

/** "tcp://host" as the reference accepts it → "host". */
export function masterHost(master: string): string {
  const host = master.replace(/^tcp:\/\//, "").trim();
  if (/^[^\[]*:\d+$/.test(host)) {
    throw new LaunchError(
      `--distributed-master ${master}: give the host alone and the port with --distributed-port`,
    );
  }
  return host.replace(/^\[(.*)\]$/, "$1");
}


/** Asks squeue for the node list of a job (array task), or null. */
export type NodeLookup = (job: string) => string | null;

export const squeueNodes: NodeLookup = (job) => {
  try {
    const out = new Deno.Command("squeue", {
      args: ["-h", "-j", job, "-o", "%N"],
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    const text = new TextDecoder().decode(out.stdout).trim().split("\n")[0]?.trim();
    return out.success && text ? text : null;
  } catch {
    return null;
  }
};

/**
 * Rank, world size, master and port of this process, from explicit flags
 * (`given`), the environment, then the preset (`base`) and `defaults`.
 * A flag that contradicts the environment's rank or world size is an
 * error: such processes could never meet.
 */
export function resolveLaunch(
  given: Partial<Settings>,
  env: Env,
  base: Partial<Settings>,
  defaults: Pick<Settings, "numReplicas" | "distributedPort">,
  lookup: NodeLookup = squeueNodes,
): Launch {
  const torchrun = env.RANK !== undefined || env.WORLD_SIZE !== undefined;
  const slurmTasks = envInt(env, "SLURM_NTASKS") ?? 1;
  // A task of `srun` (not the batch script itself), in a job of several tasks.
  const srun = !torchrun && env.SLURM_STEP_ID !== undefined && env.SLURM_PROCID !== undefined &&
    slurmTasks > 1;
  const arrayTask = envInt(env, "SLURM_ARRAY_TASK_ID");
  // The reference's array mode needs --num-replicas; without it an array
  // job is a sweep of independent runs, not one group.
  const array = !torchrun && !srun && arrayTask !== undefined && (given.numReplicas ?? 1) > 1;

  const [envWorld, envRank, source]: [number | undefined, number | undefined, LaunchSource | undefined] =
    torchrun
      ? [envInt(env, "WORLD_SIZE"), envInt(env, "RANK"), "torchrun"]
      : srun
      ? [slurmTasks, envInt(env, "SLURM_PROCID"), "slurm"]
      : array
      ? [undefined, arrayTask, "slurm-array"]
      : [undefined, undefined, undefined];
  const where = source === "torchrun"
    ? "WORLD_SIZE/RANK"
    : source === "slurm"
    ? "SLURM_NTASKS/SLURM_PROCID"
    : "SLURM_ARRAY_TASK_ID";
  if (given.numReplicas !== undefined && envWorld !== undefined && given.numReplicas !== envWorld) {
    throw new LaunchError(
      `--num-replicas ${given.numReplicas} contradicts ${where} (${envWorld} processes); drop the flag`,
    );
  }
  if (given.distributedRank !== undefined && envRank !== undefined && given.distributedRank !== envRank) {
    throw new LaunchError(
      `--distributed-rank ${given.distributedRank} contradicts ${where} (rank ${envRank}); drop the flag`,
    );
  }
  const worldSize = given.numReplicas ?? envWorld ?? base.numReplicas ?? defaults.numReplicas;
  const rank = given.distributedRank ?? envRank ?? base.distributedRank ?? 0;
  const launchedBy: LaunchSource = given.distributedRank !== undefined
    ? "flags"
    : source ?? (worldSize > 1 ? "flags" : "single");

  const localRank = envInt(env, "LOCAL_RANK") ?? (srun ? envInt(env, "SLURM_LOCALID") : undefined) ??
    (array ? 0 : rank);
  const localWorldSize = envInt(env, "LOCAL_WORLD_SIZE") ?? (srun ? tasksOnThisNode(env) : undefined) ?? 1;

  let master: string | null = null;
  if (given.distributedMaster) master = masterHost(given.distributedMaster);
  else if (env.MASTER_ADDR) master = masterHost(env.MASTER_ADDR);
  else if (srun) {
    const list = env.SLURM_JOB_NODELIST ?? env.SLURM_NODELIST;
    if (list) master = expandNodelist(list)[0] ?? null;
  } else if (array && env.SLURM_ARRAY_JOB_ID) {
    const nodes = lookup(`${env.SLURM_ARRAY_JOB_ID}_0`);
    if (nodes) master = expandNodelist(nodes)[0] ?? null;
  }
  if (master === null && base.distributedMaster) master = masterHost(base.distributedMaster);

  const job = envInt(env, array ? "SLURM_ARRAY_JOB_ID" : "SLURM_JOB_ID");
  const port = given.distributedPort ?? envInt(env, "MASTER_PORT") ??
    ((srun || array) && job !== undefined ? slurmPort(job) : undefined) ?? base.distributedPort ??
    defaults.distributedPort;

  return { worldSize, rank, localRank, localWorldSize, master, port, launchedBy };
}

/** A port per SLURM job (all tasks of a job agree on it; jobs on one node seldom collide), below Linux's ephemeral range. */
export function slurmPort(jobId: number): number {
  return 20000 + (jobId % 10000);
}

/** SLURM_TASKS_PER_NODE is like "2(x3),1": this node's count is that of its index. */
function tasksOnThisNode(env: Env): number | undefined {
  if (!env.SLURM_TASKS_PER_NODE) return undefined;
  const counts: number[] = [];
  for (const part of env.SLURM_TASKS_PER_NODE.split(",")) {
    const m = /^(\d+)(?:\(x(\d+)\))?$/.exec(part.trim());
    if (!m) return undefined;
    for (let i = 0; i < Number(m[2] ?? 1); i++) counts.push(Number(m[1]));
  }
  return counts[envInt(env, "SLURM_NODEID") ?? 0];
}




/** How to start this same CLI again: the compiled binary itself, or Deno running cli/main.ts. */
export function selfCommand(): string[] {
  // `deno compile` binaries run their modules from a virtual deno-compile-* folder.
  if (import.meta.url.includes("/deno-compile-")) return [Deno.execPath()];
  return [Deno.execPath(), "run", "--allow-all", "--quiet", new URL("./main.ts", import.meta.url).pathname];
}

/** A TCP port free on loopback right now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Copies a child's output to ours, each line prefixed. */
async function relay(
  stream: ReadableStream<Uint8Array>,
  prefix: string,
  write: (b: Uint8Array) => void,
): Promise<void> {
  const enc = new TextEncoder();
  let pending = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    pending += chunk;
    const lines = pending.split(/\r?\n|\r/);
    pending = lines.pop()!;
    for (const line of lines) write(enc.encode(`${prefix}${line}\n`));
  }
  if (pending) write(enc.encode(`${prefix}${pending}\n`));
}

/**
 * `selfsup launch --nproc N <command…>`: N replicas of `<command…>` on this
 * machine, as torchrun does (RANK, WORLD_SIZE, LOCAL_RANK,
 * LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), replacing the
 * reference's mp.spawn. Rank 0 writes to this terminal; the others' lines
 * are prefixed with `[rank i]`. When one replica fails, the others are
 * stopped (SIGTERM, then SIGKILL after `graceMs`); SIGINT and SIGTERM are
 * passed on. Returns the exit code: the first failure's, else 0.
 */
export async function launchLocal(
  nproc: number,
  args: string[],
  opts: { port?: number; graceMs?: number; log?: (line: string) => void; command?: string[] } = {},
): Promise<number> {
  if (!Number.isInteger(nproc) || nproc < 1) {
    throw new LaunchError(`--nproc must be a positive integer, got ${nproc}`);
  }
  const log = opts.log ?? ((l: string) => console.error(l));
  const port = opts.port ?? freePort();
  const [cmd, ...pre] = opts.command ?? selfCommand();
  const children = Array.from({ length: nproc }, (_, rank) =>
    new Deno.Command(cmd, {
      args: [...pre, ...args],
      env: {
        RANK: String(rank),
        WORLD_SIZE: String(nproc),
        LOCAL_RANK: String(rank),
        LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: "127.0.0.1",
        MASTER_PORT: String(port),
      },
      stdin: "null",
      stdout: rank === 0 ? "inherit" : "piped",
      stderr: rank === 0 ? "inherit" : "piped",
    }).spawn());
  const relays = children.flatMap((c, rank) =>
    rank === 0 ? [] : [
      relay(c.stdout, `[rank ${rank}] `, (b) => Deno.stdout.writeSync(b)),
      relay(c.stderr, `[rank ${rank}] `, (b) => Deno.stderr.writeSync(b)),
    ]
  );
  const running = new Set(children.map((_, i) => i));
  const signal = (sig: Deno.Signal) => {
    for (const i of running) {
      try {
        children[i].kill(sig);
      } catch { /* exited meanwhile */ }
    }
  };
  const forward: [Deno.Signal, () => void][] = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((
    s,
  ) => [s, () => signal(s)]);
  for (const [s, h] of forward) Deno.addSignalListener(s, h);
  let code = 0;
  let killer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.all(children.map(async (c, rank) => {
      const status = await c.status;
      running.delete(rank);
      if (status.code !== 0 && code === 0) {
        code = status.code || 1;
        if (running.size > 0) {
          log(
            `selfsup launch: rank ${rank} exited with code ${status.code}${
              status.signal ? ` (${status.signal})` : ""
            }; stopping the other ranks`,
          );
          signal("SIGTERM");
          killer = setTimeout(() => signal("SIGKILL"), opts.graceMs ?? 10_000);
        }
      }
    }));
    // A replica's own children may hold its pipes open after it exited:
    // give the last lines a moment, not forever.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([Promise.all(relays), new Promise((r) => timer = setTimeout(r, 2000))]);
    clearTimeout(timer);
  } finally {
    if (killer !== undefined) clearTimeout(killer);
    for (const [s, h] of forward) Deno.removeSignalListener(s, h);
  }
  return code;
}
