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
 * @module
 */
import { join } from "node:path";
import type { Config } from "../cli/config.ts";
import { runName } from "../cli/runname.ts";
import type { PassMetrics } from "./loop.ts";
import { EventWriter } from "./tensorboard.ts";
import { MetricsFile } from "./jsonl.ts";
import { VisdomClient } from "./visdom.ts";
import { augmentationGrid, type ImageBatch, pngOf } from "./images.ts";

export interface RunLogOptions {
  /** Names the self-supervised loss tag: `nce-loss` (SimCLR) or `byol-loss`. */
  method: "simclr" | "byol";
  /** Root folder; this run's files go to `<logDir>/<name>`. */
  logDir: string;
  name: string;
  rank?: number;
  visdomUrl?: string | null;
  visdomPort?: number | null;
  /** Where a visdom failure is reported (once). */
  warn?: (message: string) => void;
}

/** Where the views come from: the Trainer (ffi/native.ts). */
export interface ViewSource {
  views(which: "train1" | "train2" | "test"): Promise<ImageBatch | null>;
}

/** The per-step learning-rate tag (the reference logs the LR per epoch only). */
export const STEP_LR_TAG = "train_step-learning-rate";
/** The per-step loss-scale tag: the scale each step of fp16 training used. */
export const STEP_SCALE_TAG = "train_step-loss-scale";

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

  constructor(o: RunLogOptions) {
    this.name = o.name;
    this.#sslTag = o.method === "byol" ? "byol-loss" : "nce-loss";
    if ((o.rank ?? 0) !== 0) {
      this.dir = null;
      return;
    }
    this.dir = join(o.logDir, o.name);
    this.#events = new EventWriter(this.dir);
    this.#metrics = new MetricsFile(join(this.dir, "metrics.jsonl"));
    if (o.visdomUrl) {
      this.#visdom = new VisdomClient({ url: o.visdomUrl, port: o.visdomPort, env: o.name, warn: o.warn });
    }
  }

  /** The log of the run `cfg` describes, on its rank. */
  static fromConfig(cfg: Config, warn?: (message: string) => void): RunLog {
    return new RunLog({
      method: cfg.method,
      logDir: cfg.logDir || "runs",
      name: cfg.runName || runName(cfg),
      rank: cfg.rank,
      visdomUrl: cfg.visdomUrl,
      visdomPort: cfg.visdomPort,
      warn,
    });
  }

  /** The learning rate used at global step `step` (0-based). */
  step(lr: number, step: number): void {
    if (!this.#events) return;
    this.#events.scalar(STEP_LR_TAG, lr, step);
    this.#metrics!.point(STEP_LR_TAG, step, lr);
    if (this.#visdom) {
      this.#stepXs.push(step);
      this.#stepYs.push(lr);
    }
  }

  /** The loss scale used at global step `step` (fp16 only); not sent to visdom. */
  lossScale(scale: number, step: number): void {
    if (!this.#events) return;
    this.#events.scalar(STEP_SCALE_TAG, scale, step);
    this.#metrics!.point(STEP_SCALE_TAG, step, scale);
  }

  /**
   * The reference's per-epoch scalars (x = epoch); `lr` is the epoch's last
   * learning rate. Without a test split `test` is null; without labels
   * (`labels`) a split's probe loss and accuracies are left out.
   */
  epoch(epoch: number, train: PassMetrics, test: PassMetrics | null, lr: number, labels = { train: true, test: true }): void {
    if (!this.#events) return;
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
    if (!this.#events) return;
    this.#points(Object.entries(points), epoch);
    this.flush();
  }

  #points(points: [string, number][], epoch: number): void {
    for (const [tag, v] of points) {
      this.#events!.scalar(tag, v, epoch);
      this.#metrics!.point(tag, epoch, v);
      this.#visdom?.line(tag, [epoch], [v]);
    }
  }

  /**
   * Grids of the views of a pass's last batch, tagged
   * `<split>_augmentation1`, `<split>_augmentation2`, …
   */
  images(split: "train" | "test", views: ImageBatch[], epoch: number): void {
    if (!this.#events) return;
    views.forEach((batch, i) => {
      const tag = `${split}_augmentation${i + 1}`;
      const grid = augmentationGrid(batch);
      const png = pngOf(grid);
      this.#events!.image(tag, png, grid.width, grid.height, epoch);
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
    if (!this.#events) return;
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
    if (!this.#events) return;
    const job = Deno.env.get("SLURM_JOB_ID");
    const all = { runName: this.name, ...cfg, ...(job ? { slurmJobId: job } : {}) };
    const json = JSON.stringify(all, null, 2);
    Deno.writeTextFileSync(join(this.dir!, "config.json"), json + "\n");
    // Indented: a code block in TensorBoard's markdown.
    this.#events.text("config", json.split("\n").map((l) => "    " + l).join("\n"), 0);
    this.#visdom?.text("config", `<pre>${escapeHtml(json)}</pre>`);
    this.flush();
  }

  /** Makes everything written so far visible to readers. */
  flush(): void {
    this.#events?.flush();
    this.#metrics?.flush();
  }

  /** Flushes and closes the files; waits (bounded) for visdom to catch up. */
  async close(): Promise<void> {
    if (this.#visdom && this.#stepXs.length > 0) {
      this.#visdom.line(STEP_LR_TAG, this.#stepXs, this.#stepYs, "step");
    }
    this.#stepXs = [];
    this.#stepYs = [];
    this.#events?.close();
    this.#metrics?.close();
    this.#events = null;
    this.#metrics = null;
    await this.#visdom?.close();
    this.#visdom = null;
  }

  /** `await using log = RunLog.fromConfig(cfg)` closes it however the block ends. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
