import assert from "node:assert/strict";
import { RunLog, STEP_LR_TAG } from "../train/logging.ts";
import { visdomBase } from "../train/visdom.ts";
import type { ImageBatch } from "../train/images.ts";
import { tempDir } from "./helpers.ts";
import {
  freePort,
  METRICS,
  missingPython,
  skipReason,
  startVisdom,
  visdomWindows,
} from "./logging_helpers.ts";

const noVisdom = missingPython("visdom.server.run_server");

type Plot = { content: { data: { x: number[]; y: (number | null)[] }[] }; type: string };

Deno.test({
  name: "scalars, images and the config arrive at a real visdom server",
  ignore: skipReason("visdom server", noVisdom),
  async fn() {
    using dir = tempDir();
    const server = await startVisdom(dir.path);
    try {
      const log = new RunLog({
        method: "simclr",
        logDir: dir.path,
        name: "vis_run",
        visdomUrl: "http://127.0.0.1",
        visdomPort: server.port,
      });
      log.config({ lr: 0.3 });
      log.step(0.1, 0);
      log.step(0.2, 1);
      log.epoch(1, METRICS(5), METRICS(6), 0.2);
      log.step(0.3, 2);
      log.epoch(2, METRICS(4), METRICS(5), 0.3);
      const views: ImageBatch = { n: 2, c: 3, h: 4, w: 4, data: new Uint8Array(2 * 3 * 16).map((_, i) => i) };
      log.images("train", [views, views], 2);
      await log.close();

      const wins = await visdomWindows(server.port, "vis_run");
      const loss = wins["train_loss"] as unknown as Plot;
      assert.equal(loss.type, "plot");
      assert.deepEqual(loss.content.data[0].x, [1, 2]);
      assert.deepEqual(loss.content.data[0].y, [5, 4]);
      assert.deepEqual((wins["test_top1"] as unknown as Plot).content.data[0].y, [60, 50]);
      assert.deepEqual((wins["train_learning-rate"] as unknown as Plot).content.data[0].y, [0.2, 0.3]);
      const steps = wins[STEP_LR_TAG] as unknown as Plot;
      assert.deepEqual(steps.content.data[0].x, [0, 1, 2]);
      assert.deepEqual(steps.content.data[0].y, [0.1, 0.2, 0.3]);
      const img = wins["train_augmentation2"] as { type: string; content: { src: string } };
      assert.equal(img.type, "image");
      assert.match(img.content.src, /^data:image\/png;base64,iVBORw0KGgo/);
      const config = wins["config"] as { type: string; content: string };
      assert.equal(config.type, "text");
      assert.match(config.content, /^<pre>\{[\s\S]*"runName": "vis_run",[\s\S]*"lr": 0\.3[\s\S]*\}<\/pre>$/);
      // The reference's grapher.save(): the server wrote the environment to its env_path.
      assert.ok(Deno.statSync(`${dir.path}/vis_run.json`).isFile);
    } finally {
      await server.close();
    }
  },
});

Deno.test({
  name: "a resumed run keeps appending to its visdom plots",
  ignore: skipReason("visdom resume", noVisdom),
  async fn() {
    using dir = tempDir();
    const server = await startVisdom(dir.path);
    try {
      for (const epoch of [1, 2]) {
        const log = new RunLog({
          method: "simclr",
          logDir: dir.path,
          name: "resumed",
          visdomUrl: `127.0.0.1:${server.port}`,
        });
        log.epoch(epoch, METRICS(epoch), METRICS(epoch), 0.1);
        await log.close();
      }
      const wins = await visdomWindows(server.port, "resumed");
      assert.deepEqual((wins["train_loss"] as unknown as Plot).content.data[0].x, [1, 2]);
    } finally {
      await server.close();
    }
  },
});

Deno.test("an unreachable visdom server is reported once and never blocks logging", async () => {
  using dir = tempDir();
  const warnings: string[] = [];
  const port = freePort(); // nothing listens there
  const log = new RunLog({
    method: "simclr",
    logDir: dir.path,
    name: "novis",
    visdomUrl: "http://127.0.0.1",
    visdomPort: port,
    warn: (m) => warnings.push(m),
  });
  const t0 = performance.now();
  for (let e = 1; e <= 20; e++) {
    log.step(0.1, e);
    log.epoch(e, METRICS(1), METRICS(1), 0.1);
  }
  // Refused posts cost milliseconds; a generous bound for a busy machine.
  assert.ok(performance.now() - t0 < 5000, "logging does not wait for the server");
  await log.close();
  assert.equal(warnings.length, 1, warnings.join("\n"));
  assert.match(warnings[0], new RegExp(`visdom: cannot post to http://127\\.0\\.0\\.1:${port}`));
  // The local files are complete regardless.
  const jsonl = Deno.readTextFileSync(`${log.dir}/metrics.jsonl`).trimEnd().split("\n");
  assert.equal(jsonl.length, 20 * 12);
});

Deno.test("a visdom server that never answers cannot hold the run's end for long", async () => {
  using dir = tempDir();
  // Accepts connections and never replies.
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const c of silent) held.push(c);
  })();
  const warnings: string[] = [];
  const log = new RunLog({
    method: "simclr",
    logDir: dir.path,
    name: "silent",
    visdomUrl: `http://127.0.0.1:${(silent.addr as Deno.NetAddr).port}`,
    warn: (m) => warnings.push(m),
  });
  log.epoch(1, METRICS(1), METRICS(1), 0.1);
  const t0 = performance.now();
  await log.close();
  const secs = (performance.now() - t0) / 1000;
  assert.ok(secs < 12, `close took ${secs.toFixed(1)} s`);
  silent.close();
  for (const c of held) c.close();
  await accepting.catch(() => {});
  assert.ok(warnings.length <= 1);
});

Deno.test("visdom addresses: scheme and port as the Python client builds them", () => {
  assert.equal(visdomBase("http://host", 8097), "http://host:8097");
  assert.equal(visdomBase("host"), "http://host:8097");
  assert.equal(visdomBase("https://host:9000"), "https://host:9000");
  assert.equal(visdomBase("http://host:9000", 1234), "http://host:1234");
  assert.equal(visdomBase("http://host/base/", 80), "http://host/base");
});
