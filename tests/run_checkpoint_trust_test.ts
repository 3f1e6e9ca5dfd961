/**
 * Checkpoints are not trusted blindly: a sidecar's fields are checked, its
 * weights file must be a plain name beside it, the weights' SHA-256 must
 * match, NaN in the weights is called a damaged checkpoint (not a learning
 * rate problem), and `export` neither overwrites its input nor reads
 * another file than the one it was given.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { readSafetensors, writeSafetensors } from "../train/safetensors.ts";
import { tempDir } from "./helpers.ts";
import { methodChoices } from "../train/config.ts";
import { cli, filesIn, runNameOf, tinyArgs, tinyData } from "./run_helpers.ts";

/** A finished tiny run (1 epoch): its arguments, names and files. */
async function trainedRun(dir: string) {
  await tinyData(dir);
  const args = tinyArgs(dir, ["--epochs", "1", "--warmup", "0"]);
  const name = await runNameOf(args);
  const r = await cli(args);
  assert.equal(r.code, 0, r.stderr);
  const models = join(dir, "models");
  const side = join(models, `${name}.last.json`);
  const sidecar = JSON.parse(Deno.readTextFileSync(side));
  return { args, name, models, side, sidecar, weights: join(models, sidecar.weights) };
}

const sha256 = (path: string) => createHash("sha256").update(Deno.readFileSync(path)).digest("hex");

/** The one stderr line of a failed command, without the "selfsup: " prefix. */
function oneLineError(r: { code: number; stderr: string }): string {
  assert.equal(r.code, 1, r.stderr);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  return lines[0].replace(/^selfsup: /, "");
}

Deno.test("checkpoint trust: a damaged sidecar is a clear one-line error naming the field, never a crash or a silent no-op", async () => {
  using dir = tempDir();
  const run = await trainedRun(dir.path);
  const original = Deno.readTextFileSync(run.side);
  const resumeWith = async (edit: (s: Record<string, unknown>) => void) => {
    const s = JSON.parse(original);
    edit(s);
    Deno.writeTextFileSync(run.side, JSON.stringify(s));
    return oneLineError(await cli(run.args));
  };
  assert.match(await resumeWith((s) => s.epoch = "x"), /\.last\.json is damaged: epoch must be an integer >= 1, not "x"; .*--no-resume/);
  assert.match(await resumeWith((s) => delete s.config), /is damaged: config must be the run's settings, not undefined/);
  const methods = methodChoices().replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  assert.match(await resumeWith((s) => (s.config as Record<string, unknown>).method = 3), new RegExp(`config\\.method must be ${methods}, not 3`));
  assert.match(await resumeWith((s) => s.weights = "../elsewhere/x.safetensors"), /weights must be a \.safetensors file name in the same folder/);
  // A weights file its sidecar does not name has no epoch and step of its own: resuming from it is refused.
  Deno.writeTextFileSync(run.side, original);
  const other = run.weights.replace(/-\d+\.safetensors$/, "-999999.safetensors");
  Deno.copyFileSync(run.weights, other);
  assert.match(
    oneLineError(await cli([...run.args, "--epochs", "3", "--resume", other])),
    /-999999\.safetensors is not the weights file its sidecar .*\.last\.json names .*; resume from that sidecar/,
  );
});

Deno.test("checkpoint trust: --no-resume never deletes a file outside --model-dir that a sidecar names", async () => {
  using dir = tempDir();
  const run = await trainedRun(dir.path);
  const precious = join(dir.path, "elsewhere", "precious.safetensors");
  Deno.mkdirSync(join(dir.path, "elsewhere"));
  Deno.writeTextFileSync(precious, "mine");
  const s = JSON.parse(Deno.readTextFileSync(run.side));
  s.weights = "../elsewhere/precious.safetensors";
  Deno.writeTextFileSync(run.side, JSON.stringify(s));
  const r = await cli([...run.args, "--no-resume"]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(Deno.readTextFileSync(precious), "mine");
});

Deno.test("checkpoint trust: one flipped byte in the weights is a one-line error on resume, eval and export", async () => {
  using dir = tempDir();
  const run = await trainedRun(dir.path);
  const bytes = Deno.readFileSync(run.weights);
  bytes[bytes.length - 100] ^= 0x40; // in the data, not the header: the file still parses
  Deno.writeFileSync(run.weights, bytes);
  const damaged = new RegExp(`${run.sidecar.weights.replace(/[.]/g, "\\.")} is damaged: its SHA-256 is [0-9a-f]{64}, the sidecar recorded ${run.sidecar.sha256}`);
  // (A finished run loads nothing; one given more epochs resumes.)
  assert.match(oneLineError(await cli([...run.args, "--epochs", "3"])), damaged);
  assert.match(oneLineError(await cli(["export", run.side, join(dir.path, "out.safetensors")])), damaged);
  assert.match(oneLineError(await cli(["eval", "knn", "--checkpoint", run.side, "--data-dir", join(dir.path, "data")])), damaged);
  assert.deepEqual(filesIn(dir.path).filter((f) => f.startsWith("out")), [], "no export written");
});

Deno.test("checkpoint trust: NaN in the weights is called an unsound checkpoint by file and tensor, not a learning-rate problem", async () => {
  using dir = tempDir();
  const run = await trainedRun(dir.path);
  // A file that is internally consistent (checksum recorded for it) but holds NaN.
  const { tensors } = readSafetensors(run.weights);
  const key = [...tensors.keys()].find((k) => k.startsWith("model.backbone.") && tensors.get(k)!.dtype === "F32")!;
  const t = tensors.get(key)!;
  const data = new Uint8Array(t.data);
  new DataView(data.buffer).setFloat32(0, NaN, true);
  tensors.set(key, { ...t, data });
  writeSafetensors(run.weights, tensors);
  const s = JSON.parse(Deno.readTextFileSync(run.side));
  s.sha256 = sha256(run.weights);
  Deno.writeTextFileSync(run.side, JSON.stringify(s));
  const msg = oneLineError(await cli([...run.args, "--epochs", "3"]));
  assert.match(msg, new RegExp(`${run.sidecar.weights.replace(/[.]/g, "\\.")} holds NaN or infinite values in ${key.replace(/[.]/g, "\\.")}: the checkpoint is unsound`));
  assert.doesNotMatch(msg, /--lr/);
});

Deno.test("checkpoint trust: export refuses to overwrite the checkpoint it reads, and exports exactly the weights file it is given", async () => {
  using dir = tempDir();
  const run = await trainedRun(dir.path);
  const before = sha256(run.weights);
  for (const out of [run.weights, run.side]) {
    assert.match(oneLineError(await cli(["export", run.side, out])), /is the checkpoint being exported; write the export to another file/);
    assert.match(oneLineError(await cli(["export", run.weights, out])), /is the checkpoint being exported/);
  }
  assert.equal(sha256(run.weights), before, "the checkpoint is intact");
  // An older weights file of the same run (kept aside by the user): its own tensors are exported.
  const older = join(run.models, `${run.name}.last-1.safetensors`);
  const { tensors } = readSafetensors(run.weights);
  const key = "model.backbone.conv1.weight";
  const t = tensors.get(key)!;
  tensors.set(key, { ...t, data: new Uint8Array(t.data.length) });
  writeSafetensors(older, tensors);
  const out = join(dir.path, "older-backbone.safetensors");
  const e = await cli(["export", older, out]);
  assert.equal(e.code, 0, e.stderr);
  assert.ok(readSafetensors(out).tensors.get("conv1.weight")!.data.every((b) => b === 0), "the given file's conv1, not the sidecar's");
});
