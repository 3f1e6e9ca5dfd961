/**
 * Posting scalars, images and text to a visdom server over its HTTP API,
 * with the same messages the visdom Python client sends: `/events` creates
 * or replaces a window, `/update` appends points to a line plot,
 * `/win_exists` tells whether a window is there already (a resumed run
 * keeps appending to its plots), `/save` writes the environment to the
 * server's disk.
 *
 * Training never waits for visdom: messages go into a bounded queue that
 * one background task sends in order. A failure is reported once and
 * never stops the run; messages are dropped when the queue is full and
 * for a while after a failed request.
 *
 * @module
 */
import { Buffer } from "node:buffer";

export interface VisdomOptions {
  /** Server address as given to `--visdom-url` (`http://host`, `host`, `https://host:port`). */
  url: string;
  /** `--visdom-port`; when absent the URL's own port, else visdom's 8097. */
  port?: number | null;
  /** The visdom environment: the run name, as in the reference. */
  env: string;
  /** Where failures are reported (once). */
  warn?: (message: string) => void;
  /** A request that takes longer fails (ms). */
  timeoutMs?: number;
  /** Queue bound; older messages are kept, newer ones dropped past it. */
  maxQueued?: number;
  /** After a failed request, messages are dropped for this long (ms) before trying again. */
  retryMs?: number;
}

type Job = () => Promise<void>;

/** The base URL of the server: scheme, host, port. */
export function visdomBase(url: string, port?: number | null): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `http://${url}`;
  const u = new URL(withScheme);
  if (port !== undefined && port !== null) u.port = String(port);
  else if (u.port === "") u.port = "8097";
  return u.toString().replace(/\/+$/, "");
}

export class VisdomClient {
  readonly base: string;
  readonly env: string;
  #queue: Job[] = [];
  #running: Promise<void> | null = null;
  #windows = new Set<string>();
  #warned = false;
  #dropped = 0;
  #downUntil = 0;
  #retryMs: number;
  #warn: (m: string) => void;
  #timeoutMs: number;
  #maxQueued: number;

  constructor(o: VisdomOptions) {
    this.base = visdomBase(o.url, o.port);
    this.env = o.env;
    this.#warn = o.warn ?? ((m) => console.error(m));
    this.#timeoutMs = o.timeoutMs ?? 5000;
    this.#maxQueued = o.maxQueued ?? 10_000;
    this.#retryMs = o.retryMs ?? 30_000;
  }

  /** Messages not sent: the queue was full, the server was down, or the run ended first. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Appends points (x, y) to the line plot `tag`, creating it on first use. */
  line(tag: string, xs: number[], ys: number[], xlabel = "epoch"): void {
    const trace = {
      x: xs,
      y: ys.map((y) => (Number.isFinite(y) ? y : null)),
      name: tag,
      type: "scatter",
      mode: "lines",
      marker: { size: 10, symbol: "dot", line: { color: "#000000", width: 0.5 } },
    };
    this.#enqueue(async () => {
      if (
        !this.#windows.has(tag) && (await this.#post("win_exists", { win: tag, eid: this.env })) === "true"
      ) {
        this.#windows.add(tag);
      }
      if (this.#windows.has(tag)) {
        await this.#post("update", { data: [trace], win: tag, eid: this.env, name: tag, append: true });
        return;
      }
      const opts = { title: tag, xlabel, ylabel: tag.split("_").at(-1) };
      const layout = {
        showlegend: false,
        title: tag,
        margin: { l: 60, r: 60, t: 60, b: 60 },
        xaxis: { title: xlabel },
        yaxis: { title: opts.ylabel },
      };
      await this.#post("events", { data: [trace], win: tag, eid: this.env, layout, opts });
      this.#windows.add(tag);
    });
  }

  /** Shows a PNG picture in window `tag`, replacing what it showed. */
  image(tag: string, png: Uint8Array, width: number, height: number): void {
    const src = `data:image/png;base64,${Buffer.from(png).toString("base64")}`;
    this.#send("events", {
      data: [{ content: { src, caption: null }, type: "image" }],
      win: tag,
      eid: this.env,
      opts: { title: tag, width, height },
    });
  }

  /** Shows `text` (HTML) in window `tag`. */
  text(tag: string, text: string): void {
    this.#send("events", {
      data: [{ content: text, type: "text" }],
      win: tag,
      eid: this.env,
      opts: { title: tag },
    });
  }

  /** Asks the server to write this environment to its disk (the reference's `grapher.save()`). */
  save(): void {
    this.#send("save", { data: [this.env], eid: this.env });
  }

  /** Waits for the queue to empty, at most `timeoutMs`; what is left is dropped. */
  async close(timeoutMs = 10_000): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
    await Promise.race([this.#running ?? Promise.resolve(), deadline]);
    clearTimeout(timer);
    this.#dropped += this.#queue.length;
    this.#queue = [];
  }

  #send(endpoint: string, msg: unknown): void {
    this.#enqueue(async () => void await this.#post(endpoint, msg));
  }

  #enqueue(job: Job): void {
    if (this.#queue.length >= this.#maxQueued) {
      this.#dropped++;
      return;
    }
    this.#queue.push(job);
    this.#running ??= this.#drain();
  }

  async #drain(): Promise<void> {
    for (let job = this.#queue.shift(); job; job = this.#queue.shift()) {
      // After a failure, messages are dropped for a while rather than each
      // waiting for its own time-out against a server that is down.
      if (performance.now() < this.#downUntil) {
        this.#dropped++;
        continue;
      }
      try {
        await job();
      } catch (e) {
        this.#downUntil = performance.now() + this.#retryMs;
        this.#dropped++;
        this.#fail(e);
      }
    }
    this.#running = null;
  }

  async #post(endpoint: string, msg: unknown): Promise<string> {
    const res = await fetch(`${this.base}/${endpoint}`, {
      method: "POST",
      body: JSON.stringify(msg),
      signal: AbortSignal.timeout(this.#timeoutMs),
    });
    const body = await res.text();
    if (!res.ok) throw new Error(`HTTP ${res.status} from /${endpoint}`);
    return body;
  }

  #fail(e: unknown): void {
    if (this.#warned) return;
    this.#warned = true;
    const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
    this.#warn(`visdom: cannot post to ${this.base} (${why}); training goes on without it (reported once)`);
  }
}
