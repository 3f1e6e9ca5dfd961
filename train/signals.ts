/**
 * Preemption. SIGTERM, SIGUSR1 (SLURM's `--signal`) and a first SIGINT
 * ask the loop to finish its current step, write the `last` checkpoint
 * and exit; a second SIGINT exits at once. The listeners only set a flag:
 * the step in flight is a non-blocking native call, and exiting during
 * one can crash (DENO_NOTES).
 *
 * @module
 */
export class StopFlag {
  /** The signal that asked to stop, if any. */
  signal: Deno.Signal | null = null;
  #handlers: [Deno.Signal, () => void][] = [];

  /** `beforeExit` runs before a second SIGINT exits (e.g. to remove a half-written checkpoint). */
  constructor(log: (line: string) => void = console.error, beforeExit: () => void | Promise<void> = () => {}) {
    for (const sig of ["SIGINT", "SIGTERM", "SIGUSR1"] as Deno.Signal[]) {
      const h = async () => {
        if (this.signal === "SIGINT" && sig === "SIGINT") {
          log("SIGINT again: exiting now without saving");
          await beforeExit();
          Deno.exit(130);
        }
        this.signal ??= sig;
        log(`\n${sig}: finishing the current step, then saving and exiting`);
      };
      Deno.addSignalListener(sig, h);
      this.#handlers.push([sig, h]);
    }
  }

  get requested(): boolean {
    return this.signal !== null;
  }

  [Symbol.dispose](): void {
    for (const [s, h] of this.#handlers) Deno.removeSignalListener(s, h);
  }
}

/**
 * A stop that replicas agree on: it counts only once `agree()` (called by
 * every replica after every step) found that some replica was signalled,
 * so that all of them stop after the same step; a signal arriving between
 * agreements waits for the next one. Same face as {@link StopFlag}.
 */
export class AgreedStop {
  signal: Deno.Signal | null = null;
  constructor(
    private readonly local: StopFlag,
    /** Max over the replicas (Trainer.allReduce with "max"). */
    private readonly max: (values: number[]) => Promise<number[]>,
  ) {}

  get requested(): boolean {
    return this.signal !== null;
  }

  async agree(): Promise<void> {
    const any = (await this.max([this.local.requested ? 1 : 0]))[0] > 0;
    if (any) this.signal ??= this.local.signal ?? "SIGTERM";
  }
}

/**
 * Under SLURM, puts the job back in the queue when it allows requeueing
 * (`scontrol show job` says Requeue=1). Returns what happened, for the log.
 */
export async function requeueUnderSlurm(env = Deno.env.toObject()): Promise<string | null> {
  const id = env.SLURM_ARRAY_JOB_ID && env.SLURM_ARRAY_TASK_ID
    ? `${env.SLURM_ARRAY_JOB_ID}_${env.SLURM_ARRAY_TASK_ID}`
    : env.SLURM_JOB_ID;
  if (!id) return null;
  const run = async (args: string[]) => {
    try {
      const out = await new Deno.Command("scontrol", { args, stdout: "piped", stderr: "piped" }).output();
      return { ok: out.success, text: new TextDecoder().decode(out.success ? out.stdout : out.stderr).trim() };
    } catch (e) {
      return { ok: false, text: (e as Error).message };
    }
  };
  const show = await run(["show", "job", id]);
  if (!show.ok) return `could not ask SLURM about job ${id}: ${show.text.split("\n")[0]}`;
  if (!/\bRequeue=1\b/.test(show.text)) return `job ${id} does not allow requeueing (sbatch --requeue); not requeued`;
  const r = await run(["requeue", id]);
  return r.ok ? `requeued SLURM job ${id}` : `scontrol requeue ${id} failed: ${r.text.split("\n")[0]}`;
}
