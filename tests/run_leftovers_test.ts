/**
 * No leftover files: what killed or failed checkpoint writers leave in
 * --model-dir (temp files, weights no sidecar names) is removed at the
 * next start, and a second Ctrl-C during a save removes its pieces at once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { readSidecar } from "../train/checkpoint.ts";
import { tempDir } from "./helpers.ts";
import { cli, filesIn, MAIN, readUntil, runNameOf, tinyArgs, tinyData, waitFor } from "./run_helpers.ts";

const FIXTURE = join(import.meta.dirname!, "fixtures", "save_forever.ts");

/** The files of `dir` that are neither a sidecar nor the weights file a sidecar names. */
function strays(dir: string): string[] {
  const named = new Set<string>();
  for (const f of filesIn(dir).filter((f) => f.endsWith(".json"))) {
    named.add(f);
    named.add(readSidecar(join(dir, f))!.weights);
  }
  return filesIn(dir).filter((f) => !named.has(f));
}

Deno.test("leftover files: temp files and unnamed weights of killed writers are removed at the next start; others' files are kept", async () => {
  using dir = tempDir();
  await tinyData(dir.path);
  const args = tinyArgs(dir.path, ["--checkpoint-minutes", "0.00001"]);
  const name = await runNameOf(args);
  const models = join(dir.path, "models");
  // Real kills at random moments of a run that checkpoints after every step.
  for (let kill = 0; kill < 3; kill++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", MAIN, ...args],
      stdout: "null",
      stderr: "null",
    }).spawn();
    await waitFor(() => filesIn(models).some((f) => f.endsWith(".last.json")), "a first checkpoint");
    await new Promise((r) => setTimeout(r, 200 + Math.random() * 1500));
    try {
      child.kill("SIGKILL");
    } catch { /* finished first */ }
    await child.status;
  }
  // And what such writers leave, for certain: temp files of both kinds and an uncommitted weights file.
  const planted = [`.${name}.last-7.safetensors.tmp-99999`, `.${name}.last.json.tmp-99999`, `${name}.last-103.safetensors`];
  const others = ["other-run.last-3.safetensors", `.other-run.last.json.tmp-1`, "notes.txt", `${name}.last-7.safetensors.bak`];
  for (const f of [...planted, ...others]) Deno.writeTextFileSync(join(models, f), "x");
  const r = await cli(args);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`removed what interrupted saves left in ${models}: .*last-103\\.safetensors`));
  assert.deepEqual(strays(models).sort(), others.sort(), "only files of other runs and the user's stay");
});

Deno.test("leftover files: a second Ctrl-C during saves leaves a loadable checkpoint and no pieces of the interrupted one", async () => {
  using dir = tempDir();
  for (let round = 0; round < 3; round++) {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", "--quiet", FIXTURE, dir.path],
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const out = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const err = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    await readUntil(out, /saved [3-9]/);
    child.kill("SIGINT");
    // The second only once the first was taken (two at once may arrive as one).
    await readUntil(err, /SIGINT: finishing/);
    await new Promise((r) => setTimeout(r, 23 * round));
    child.kill("SIGINT");
    const status = await child.status;
    await out.cancel();
    await err.cancel();
    assert.equal(status.code, 130);
    assert.deepEqual(strays(dir.path), [], `round ${round}`);
    assert.equal(filesIn(dir.path).filter((f) => f.endsWith(".last.json")).length, 1);
  }
});
