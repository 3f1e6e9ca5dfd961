/**
 * Where a run's numbers and pictures go: one {@link RunLog} that the
 * training loop calls, fanning out to a TensorBoard event file, a
 * `metrics.jsonl` beside it and, when `--visdom-url` is given, a visdom
 * server. Only rank 0 logs (REFERENCE.md §6); on other ranks every method
 * does nothing. docs/OUTPUTS.md lists every tag.
 *
 * ```ts
 * await using log = RunLog.fromConfig(cfg);
 * log.config(cfg);
 * log.step(lr, step);
 * log.epoch(epoch, train, test, lr);
 * ```
 *
 * Logging never stops training: the first write that fails (a full or
 * read-only log disk) is reported once, the files are cut back to their
 * last complete record and logging to files ends there; checkpoints are
 * still written. Before a checkpoint commits, {@link RunLog.marks} puts the
 * files on disk and returns their lengths for its sidecar; a run resumed
 * from it cuts the files back to those lengths and continues them, so the
 * logs hold every point once, as an uninterrupted run's would.
 *
 * @module
 */
import { basename, join } from "node:path";
import { type Config, type Method, methodSpec } from "./config.ts";
import { runName } from "./runname.ts";
import { EVENT_FILE, EventWriter } from "./tensorboard.ts";
import { MetricsFile } from "./jsonl.ts";
import { VisdomClient } from "./visdom.ts";
import { augmentationGrid, type ImageBatch, pngOf } from "./images.ts";
import type { LogMarks, PassMetrics } from "./checkpoint.ts";

export interface RunLogOptions {
  /** Names the self-supervised loss tag (train/config.ts METHODS). */
  method: Method;
  /** Root folder; this run's files go to `<logDir>/<name>`. */
  logDir: string;
  name: string;
  rank?: number;
  visdomUrl?: string | null;
  visdomPort?: number | null;
  /** Where a visdom or log-file failure is reported (once each). */
  warn?: (message: string) => void;
  /**
   * How to treat the files already there: continue them from a
   * checkpoint's marks (cut back to those lengths), `null` for a fresh
   * start (earlier files are moved to `previous-<time>/`), or, when absent,
   * append to metrics.jsonl beside a new event file.
   */
  continueFrom?: LogMarks | null;
}

/** Where the views come from: the Trainer (ffi/native.ts). */
export interface ViewSource {
  views(which: "train1" | "train2" | "test"): Promise<ImageBatch | null>;
}

/** The per-step learning-rate tag (the reference logs the LR per epoch only). */
export const STEP_LR_TAG = "train_step-learning-rate";
/** The per-step loss-scale tag: the scale each step of fp16 training used. */
export const STEP_SCALE_TAG = "train_step-loss-scale";
const METRICS_FILE = "metrics.jsonl";

export class RunLog {
  /** `<logDir>/<name>`, or null on ranks that do not log. */
  readonly dir: string | null;
  readonly name: string;
  #sslTag: string;
  #events: EventWriter | null = null;
  #metrics: MetricsFile | null = null;
  #visdom: VisdomClient | null = null;
  #stepXs: number[] = [];
  #stepYs: number[] = [];
  #warn: (message: string) => void;
  /** Why the files stopped, once a write failed. */
  #failed: string | null = null;
  #logs = false;
  /** The event file continues one that already holds the config. */
  #continued = false;

  constructor(o: RunLogOptions) {
    this.name = o.name;
    this.#sslTag = methodSpec(o.method).lossTag;
    this.#warn = o.warn ?? ((m) => console.error(m));
    if ((o.rank ?? 0) !== 0) {
      this.dir = null;
      return;
    }
    this.#logs = true;
    this.dir = join(o.logDir, o.name);
    const dir = this.dir;
    this.#files(() => {
      if (o.continueFrom === null) setAside(dir);
      const marks = o.continueFrom ?? undefined;
      const event = marks && Object.keys(marks).find((f) => EVENT_FILE.test(f) && exists(join(dir, f)));
      this.#events = new EventWriter(dir, event ? { name: event, length: marks[event] } : undefined);
      this.#continued = !!event;
      this.#metrics = new MetricsFile(join(dir, METRICS_FILE), marks ? marks[METRICS_FILE] ?? 0 : undefined);
    });
    if (o.visdomUrl) {
      this.#visdom = new VisdomClient({ url: o.visdomUrl, port: o.visdomPort, env: o.name, warn: o.warn });
    }
  }

  /** The log of the run `cfg` describes, on its rank; `continueFrom` as in {@link RunLogOptions}. */
  static fromConfig(cfg: Config, warn?: (message: string) => void, continueFrom?: LogMarks | null): RunLog {
    return new RunLog({
      method: cfg.method,
      logDir: cfg.logDir || "runs",
      name: cfg.runName || runName(cfg),
      rank: cfg.rank,
      visdomUrl: cfg.visdomUrl,
      visdomPort: cfg.visdomPort,
      warn,
      continueFrom,
    });
  }

  /** Runs a write to the files; the first failure ends file logging with one warning. */
  #files(write: () => void): void {
    if (this.#failed !== null) return;
    try {
      write();
    } catch (e) {
      this.#failed = (e instanceof Error ? e.message : String(e)).split("\n")[0];
      this.#warn(`logging stopped: ${this.#failed}; training goes on and checkpoints are still written`);
    }
  }

  /** The learning rate used at global step `step` (0-based). */
  step(lr: number, step: number): void {
    if (!this.#logs) return;
    this.#files(() => {
      this.#events?.scalar(STEP_LR_TAG, lr, step);
      this.#metrics?.point(STEP_LR_TAG, step, lr);
    });
    if (this.#visdom) {
      this.#stepXs.push(step);
      this.#stepYs.push(lr);
    }
  }

  /** The loss scale used at global step `step` (fp16 only); not sent to visdom. */
  lossScale(scale: number, step: number): void {
    this.#files(() => {
      this.#events?.scalar(STEP_SCALE_TAG, scale, step);
      this.#metrics?.point(STEP_SCALE_TAG, step, scale);
    });
  }

  /**
   * The reference's per-epoch scalars (x = epoch); `lr` is the epoch's last
   * learning rate. Without a test split `test` is null; without labels
   * (`labels`) a split's probe loss and accuracies are left out.
   */
  epoch(epoch: number, train: PassMetrics, test: PassMetrics | null, lr: number, labels = { train: true, test: true }): void {
    if (!this.#logs) return;
    const points: [string, number][] = [];
    for (const [prefix, m] of [["train", train], ["test", test]] as const) {
      if (!m) continue;
      points.push([`${prefix}_loss`, m.loss], [`${prefix}_${this.#sslTag}`, m.sslLoss]);
      if (labels[prefix]) points.push([`${prefix}_linear-loss`, m.linearLoss], [`${prefix}_top1`, m.top1], [`${prefix}_top5`, m.top5]);
    }
    points.push(["train_learning-rate", lr]);
    this.#points(points, epoch);
    if (this.#visdom && this.#stepXs.length > 0) {
      // Per-step points go to visdom once an epoch, in one message.
      this.#visdom.line(STEP_LR_TAG, this.#stepXs, this.#stepYs, "step");
      this.#stepXs = [];
      this.#stepYs = [];
    }
    this.#visdom?.save();
    this.flush();
  }

  /** Further per-epoch scalars, e.g. the kNN monitor's. */
  scalars(epoch: number, points: Record<string, number>): void {
    if (!this.#logs) return;
    this.#points(Object.entries(points), epoch);
    this.flush();
  }

  #points(points: [string, number][], epoch: number): void {
    this.#files(() => {
      for (const [tag, v] of points) {
        this.#events?.scalar(tag, v, epoch);
        this.#metrics?.point(tag, epoch, v);
      }
    });
    for (const [tag, v] of points) this.#visdom?.line(tag, [epoch], [v]);
  }

  /**
   * Grids of the views of a pass's last batch, tagged
   * `<split>_augmentation1`, `<split>_augmentation2`, …
   */
  images(split: "train" | "test", views: ImageBatch[], epoch: number): void {
    if (!this.#logs) return;
    views.forEach((batch, i) => {
      const tag = `${split}_augmentation${i + 1}`;
      const grid = augmentationGrid(batch);
      const png = pngOf(grid);
      this.#files(() => this.#events?.image(tag, png, grid.width, grid.height, epoch));
      this.#visdom?.image(tag, png, grid.width, grid.height);
    });
    this.flush();
  }

  /**
   * The grids of the epoch's last train batch (both views) and last test
   * batch, whose one view is shown twice: the reference's two test
   * "views" are the same deterministic resize.
   */
  async augmentations(source: ViewSource, epoch: number): Promise<void> {
    if (!this.#logs) return;
    const [v1, v2, test] = [
      await source.views("train1"),
      await source.views("train2"),
      await source.views("test"),
    ];
    if (v1 && v2) this.images("train", [v1, v2], epoch);
    if (test) this.images("test", [test, test], epoch);
  }

  /**
   * The resolved settings, as text (tag `config`) and as `config.json` in
   * the run folder; `SLURM_JOB_ID` is added when set, as the reference does.
   */
  config(cfg: object): void {
    if (!this.#logs) return;
    const job = Deno.env.get("SLURM_JOB_ID");
    const all = { runName: this.name, ...cfg, ...(job ? { slurmJobId: job } : {}) };
    const json = JSON.stringify(all, null, 2);
    const path = join(this.dir!, "config.json");
    this.#files(() => {
      try {
        Deno.writeTextFileSync(path, json + "\n");
      } catch (e) {
        throw new Error(`cannot write ${path}: ${(e as Error).message}`);
      }
      // Indented: a code block in TensorBoard's markdown. A continued
      // event file has it from the run's first start.
      if (!this.#continued) this.#events?.text("config", json.split("\n").map((l) => "    " + l).join("\n"), 0);
    });
    this.#visdom?.text("config", `<pre>${escapeHtml(json)}</pre>`);
    this.flush();
  }

  /** Makes everything written so far visible to readers. */
  flush(): void {
    this.#files(() => {
      this.#events?.flush();
      this.#metrics?.flush();
    });
  }

  /**
   * Puts everything logged so far on disk and returns the files' lengths,
   * for the sidecar of the checkpoint about to commit; null on ranks that
   * do not log. After a failure, the lengths where the files stopped.
   */
  marks(): LogMarks | null {
    if (!this.#logs) return null;
    this.#files(() => {
      this.#events?.sync();
      this.#metrics?.sync();
    });
    const out: LogMarks = {};
    if (this.#events) out[basename(this.#events.path)] = this.#events.length;
    if (this.#metrics) out[METRICS_FILE] = this.#metrics.length;
    return out;
  }

  /** Flushes and closes the files; waits (bounded) for visdom to catch up. */
  async close(): Promise<void> {
    if (this.#visdom && this.#stepXs.length > 0) {
      this.#visdom.line(STEP_LR_TAG, this.#stepXs, this.#stepYs, "step");
    }
    this.#stepXs = [];
    this.#stepYs = [];
    const events = this.#events;
    const metrics = this.#metrics;
    this.#events = null;
    this.#metrics = null;
    this.#files(() => {
      events?.close();
      metrics?.close();
    });
    if (this.#failed !== null) this.#warn(`the logs in ${this.dir} are incomplete: ${this.#failed}`);
    await this.#visdom?.close();
    this.#visdom = null;
  }

  /** `await using log = RunLog.fromConfig(cfg)` closes it however the block ends. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/**
 * A fresh start of a run whose folder holds logs (of an attempt that
 * never checkpointed, or one restarted with --no-resume): they are moved
 * to `previous-<time>/`, which TensorBoard shows as a run of its own.
 */
function setAside(dir: string): void {
  let old: string[];
  try {
    old = [...Deno.readDirSync(dir)].filter((e) => e.isFile && (EVENT_FILE.test(e.name) || e.name === METRICS_FILE || e.name === "config.json"))
      .map((e) => e.name);
  } catch {
    return;
  }
  if (!old.some((f) => f !== "config.json")) return;
  const to = join(dir, `previous-${new Date().toISOString().replace(/[:.]/g, "-")}`);
  Deno.mkdirSync(to, { recursive: true });
  for (const f of old) Deno.renameSync(join(dir, f), join(to, f));
}

function exists(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** The command that shows the logs in `logDir`, as a run prints it. */
export function tensorboardHint(logDir: string): string {
  const front = new URL("../selfsup", import.meta.url).pathname;
  const shown = front === join(Deno.cwd(), "selfsup") ? "./selfsup" : front;
  return `${shown} tensorboard --logdir ${logDir}`;
}
