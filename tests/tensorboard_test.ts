/**
 * `selfsup tensorboard`: the TensorBoard the set-up installed serves the
 * run logs; without one, a hint that works.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "./helpers.ts";
import { freePort, missingPython, skipReason } from "./logging_helpers.ts";

const MAIN = join(import.meta.dirname!, "..", "cli", "main.ts");

Deno.test({
  name: "selfsup tensorboard serves --logdir with the set-up's tensorboard and stops on SIGTERM",
  ignore: skipReason("selfsup tensorboard", missingPython("tensorboard")),
  async fn() {
    using dir = tempDir();
    const port = freePort();
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", MAIN, "tensorboard", "--logdir", dir.path, "--port", String(port), "--host", "127.0.0.1"],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output = Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
    let page = "";
    for (let t = 0; t < 240 && !page; t++) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/data/logdir`);
        if (res.ok) page = await res.text();
        else await res.body?.cancel();
      } catch {
        await new Promise((r) => setTimeout(r, 500));
      }
    }
    child.kill("SIGTERM");
    const status = await child.status;
    const [, err] = await output;
    assert.ok(page, `tensorboard answered on port ${port}: ${err}`);
    assert.equal(JSON.parse(page).logdir, dir.path);
    assert.match(err, new RegExp(`tensorboard.* --logdir ${dir.path} --port ${port} --host 127\\.0\\.0\\.1`));
    assert.ok(status.code !== null);
  },
});

Deno.test("without a tensorboard, selfsup tensorboard says how to get one in one line", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, "tensorboard", "--logdir", "somewhere"],
    env: { SELFSUP_PYTHON: "", PATH: "/nonexistent" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1);
  assert.equal(
    new TextDecoder().decode(out.stderr),
    "selfsup: no tensorboard found: run ./selfsup once (it installs tensorboard into its venv under .cache/), or pip install tensorboard and run tensorboard --logdir somewhere\n",
  );
});
