/**
 * One live process per run. Rank 0 holds `<model-dir>/<run>.lock` while it
 * trains; a second copy of the same run (a double submit, a SLURM requeue
 * while the old job still lives) refuses with one line naming the holder.
 *
 * The lock is taken with link(2), not flock: a hard link to a file only
 * this process wrote is atomic on local file systems and on NFS and Lustre
 * alike, where flock may be local to one client or not supported. A lock
 * whose holder is gone is stale and taken over:
 *
 * - on the same machine (host name, boot id and pid namespace all equal),
 *   when its pid is gone or now belongs to a process started at another
 *   time;
 * - from another machine, when its heartbeat (the lock's mtime, rewritten
 *   every {@link HEARTBEAT_S} s) is older than {@link LEASE_S} s, measured
 *   on the file server's clock (the mtime of a file just written beside it),
 *   so the machines' clocks need not agree;
 * - by a requeued SLURM job of the same job id (SLURM_RESTART_COUNT above
 *   the holder's): SLURM ends the old instance before it requeues.
 *
 * @module
 */
import { join } from "node:path";

/** Seconds between heartbeats of the live holder. */
export const HEARTBEAT_S = 30;
/** Seconds without a heartbeat after which another machine's lock is stale. */
export const LEASE_S = 300;
/** Seconds after which an unreadable lock counts as torn by a crash, not as being written. */
const TORN_S = 10;

/** Who holds a lock: what the second copy's error shows, and what proves it alive. */
export interface Holder {
  host: string;
  pid: number;
  /** When the holder took the lock (ISO 8601). */
  started: string;
  /** Boot id and pid namespace: pids compare only within one of each. */
  machine: string;
  /** The holder's start time in clock ticks since boot (/proc/<pid>/stat), against pid reuse. */
  procStart: number | null;
  /** SLURM job (array job_task) and restart count, when under SLURM. */
  slurmJob: string | null;
  slurmRestart: number;
}

export class RunLockError extends Error {
  override name = "RunLockError";
}

type Env = Record<string, string | undefined>;

/** This process, as a lock names it. */
export function me(env: Env = Deno.env.toObject(), pid = Deno.pid): Holder {
  const job = env.SLURM_ARRAY_JOB_ID && env.SLURM_ARRAY_TASK_ID
    ? `${env.SLURM_ARRAY_JOB_ID}_${env.SLURM_ARRAY_TASK_ID}`
    : env.SLURM_JOB_ID ?? null;
  return {
    host: hostname(),
    pid,
    started: new Date().toISOString(),
    machine: machineId(),
    procStart: procStart(pid),
    slurmJob: job,
    slurmRestart: Number(env.SLURM_RESTART_COUNT ?? 0) || 0,
  };
}

/** Why `holder` no longer holds its lock, or null while it may still be alive. */
export function staleness(holder: Holder, lockAgeS: number, self: Holder): string | null {
  if (holder.slurmJob !== null && holder.slurmJob === self.slurmJob && self.slurmRestart > holder.slurmRestart) {
    return `SLURM requeued job ${holder.slurmJob} (restart ${self.slurmRestart})`;
  }
  if (holder.host === self.host && holder.machine === self.machine) {
    const now = procStart(holder.pid);
    if (now === null) return `process ${holder.pid} is gone`;
    if (holder.procStart !== null && now !== holder.procStart) return `pid ${holder.pid} is another process now`;
    return null;
  }
  return lockAgeS > LEASE_S ? `no heartbeat for ${Math.round(lockAgeS)} s` : null;
}

/** The lock of a run; `using` releases it. */
export class RunLock implements Disposable {
  readonly path: string;
  readonly holder: Holder;
  /** Set when another process took the lock from under this one (it should stop). */
  lost: string | null = null;
  #text: string;
  #timer: ReturnType<typeof setInterval>;

  private constructor(path: string, holder: Holder, text: string, heartbeatS: number) {
    this.path = path;
    this.holder = holder;
    this.#text = text;
    this.#timer = setInterval(() => this.#beat(), heartbeatS * 1000);
    // The heartbeat alone must not keep the process alive.
    Deno.unrefTimer(Number(this.#timer));
  }

  /**
   * Takes the lock of run `name` in `dir`, or throws a one-line
   * {@link RunLockError} naming the live holder. `log` hears about a
   * stale lock taken over; `heartbeatS` is for tests.
   */
  static acquire(
    dir: string,
    name: string,
    log: (line: string) => void = console.error,
    env: Env = Deno.env.toObject(),
    heartbeatS = HEARTBEAT_S,
  ): RunLock {
    Deno.mkdirSync(dir, { recursive: true });
    const path = lockPath(dir, name);
    const self = me(env);
    const text = JSON.stringify(self) + "\n";
    // A file only this process writes, linked to the lock's name below.
    const mine = join(dir, `.${name}.lock.${self.host}.${self.pid}`);
    writeSynced(mine, text);
    try {
      for (let attempt = 0; attempt < 5; attempt++) {
        if (link(mine, path)) return new RunLock(path, self, text, heartbeatS);
        const found = readHolder(path);
        if (!found) continue; // released meanwhile: try again
        // The file server's "now": the mtime of the file just written.
        const age = (mtimeOf(mine) - found.mtime) / 1000;
        let why: string | null;
        if (found.holder) {
          why = staleness(found.holder, age, self);
          if (!why) throw new RunLockError(heldBy(path, name, found.holder, age));
        } else {
          // Unreadable: torn by a crash while written, or being written now.
          if (age < TORN_S) throw new RunLockError(`another process is taking the lock ${path} right now; try again`);
          why = "an unreadable lock";
        }
        if (breakStale(path, found.text)) {
          log(`taking over the stale lock of ${name} (${why})${found.holder ? ": " + describe(found.holder) : ""}`);
        }
      }
      throw new RunLockError(`cannot take the lock ${path}: other processes keep taking it; try again`);
    } finally {
      Deno.removeSync(mine);
    }
  }

  /** Rewrites the same bytes (the mtime is the heartbeat) and checks the lock is still this process's. */
  #beat(): void {
    try {
      const now = Deno.readTextFileSync(this.path);
      if (now !== this.#text) {
        this.lost = `the lock ${this.path} was taken by another process (${describe(JSON.parse(now))}); stopping`;
        return;
      }
      const f = Deno.openSync(this.path, { write: true });
      try {
        f.writeSync(new TextEncoder().encode(this.#text));
      } finally {
        f.close();
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) this.lost = `the lock ${this.path} was removed by another process; stopping`;
      // Other failures (a full disk) leave the heartbeat to the next beat.
    }
  }

  release(): void {
    clearInterval(this.#timer);
    try {
      if (Deno.readTextFileSync(this.path) === this.#text) Deno.removeSync(this.path);
    } catch { /* gone already */ }
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

export function lockPath(dir: string, name: string): string {
  return join(dir, `${name}.lock`);
}

/** The one-line refusal of a second copy. */
function heldBy(path: string, name: string, h: Holder, ageS: number): string {
  const remote = `; if that process is gone, the lock expires ${Math.max(0, Math.round(LEASE_S - ageS))} s after its last heartbeat`;
  return `run ${name} is already running: ${describe(h)} holds ${path}${h.host === hostname() ? "" : remote}` +
    ` (remove the lock only if no such process runs)`;
}

function describe(h: Holder): string {
  return `pid ${h.pid} on ${h.host}, started ${h.started}${h.slurmJob ? `, SLURM job ${h.slurmJob}` : ""}`;
}

/**
 * Makes `to` a hard link of `from`; true when this call made the lock. An
 * NFS retry whose first try succeeded fails but shows 2 links. A file
 * system without hard links gets an exclusive create instead.
 */
function link(from: string, to: string): boolean {
  try {
    Deno.linkSync(from, to);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return Deno.statSync(from).nlink === 2;
    if (Deno.statSync(from).nlink === 2) return true;
    try {
      const f = Deno.openSync(to, { write: true, createNew: true });
      try {
        f.writeSync(Deno.readFileSync(from));
        f.syncSync();
      } finally {
        f.close();
      }
      return true;
    } catch (e2) {
      if (e2 instanceof Deno.errors.AlreadyExists) return false;
      throw new RunLockError(`cannot create the lock ${to}: ${(e2 as Error).message}`);
    }
  }
}

/** The lock's holder (null when its content is unreadable), content and mtime; null when there is no lock. */
function readHolder(path: string): { holder: Holder | null; text: string; mtime: number } | null {
  try {
    const text = Deno.readTextFileSync(path);
    const mtime = mtimeOf(path);
    let holder: Holder | null = null;
    try {
      const h = JSON.parse(text);
      if (typeof h?.host === "string" && Number.isInteger(h?.pid)) holder = h;
    } catch { /* torn */ }
    return { holder, text, mtime };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Removes a stale lock whose content is `text`. It is renamed aside first
 * (atomic); if what was renamed is not the stale lock (another process
 * replaced it meanwhile), it is put back.
 */
function breakStale(path: string, text: string): boolean {
  const aside = `${path}.stale-${Deno.pid}`;
  try {
    Deno.renameSync(path, aside);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  if (Deno.readTextFileSync(aside) !== text) {
    try {
      Deno.linkSync(aside, path);
    } catch { /* a third process holds it now; ours is gone either way */ }
    Deno.removeSync(aside);
    return false;
  }
  Deno.removeSync(aside);
  return true;
}

function writeSynced(path: string, text: string): void {
  const f = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    f.writeSync(new TextEncoder().encode(text));
    f.syncSync();
  } finally {
    f.close();
  }
}

function mtimeOf(path: string): number {
  return Deno.statSync(path).mtime?.getTime() ?? 0;
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
}

/** Boot id and pid namespace: two processes with these equal see the same pids. */
function machineId(): string {
  const read = (f: () => string) => {
    try {
      return f().trim();
    } catch {
      return "?";
    }
  };
  return `${read(() => Deno.readTextFileSync("/proc/sys/kernel/random/boot_id"))}/${read(() => Deno.readLinkSync("/proc/self/ns/pid"))}`;
}

/** When process `pid` started (clock ticks since boot), or null when there is no such process. */
function procStart(pid: number): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // Fields after the command name (which may hold spaces and parentheses).
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(fields[19]);
  } catch {
    return null;
  }
}
