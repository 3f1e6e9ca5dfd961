/**
 * Full disks lose no work and leave no debris. The log and model folders
 * are put on small tmpfs file systems in a private mount namespace
 * (`unshare -rm`, no root needed where user namespaces are allowed); a
 * write that fails halfway is made with a file-size limit (`ulimit -f`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { tempDir } from "./helpers.ts";
import { skipReason } from "./logging_helpers.ts";
import { cli, filesIn, MAIN, privateMountsUnavailable, runNameOf, tinyArgs, tinyData } from "./run_helpers.ts";

const noMounts = privateMountsUnavailable();

/** Runs `script` under sh in a private mount namespace, then the CLI with `args`; sh's output after it. */
async function inNamespace(setup: string, args: string[], after = "") {
  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const cmd = `${setup} && ${q(Deno.execPath())} run --allow-all --quiet ${q(MAIN)} ${args.map(q).join(" ")}; echo "rc=$?" >&2; ${after}`;
  const out = await new Deno.Command("unshare", { args: ["-rm", "sh", "-c", cmd], stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  const stderr = d.decode(out.stderr);
  return { code: Number(stderr.match(/rc=(\d+)\s*$/)?.[1] ?? -1), stdout: d.decode(out.stdout), stderr: stderr.replace(/rc=\d+\s*$/, "") };
}

/** Bytes of the tiny run's checkpoint weights (from a normal run). */
async function weightsBytes(dir: string): Promise<number> {
  await tinyData(dir);
  const r = await cli(tinyArgs(dir, ["--epochs", "1", "--warmup", "0"]));
  assert.equal(r.code, 0, r.stderr);
  const models = join(dir, "models");
  return Deno.statSync(join(models, filesIn(models).find((f) => /\.last-\d+\.safetensors$/.test(f))!)).size;
}

Deno.test({
  name: "full disks: a full --log-dir stops the logs with one warning naming the file; training and its checkpoints go on",
  ignore: skipReason("full log disk", noMounts),
  async fn() {
    using dir = tempDir();
    await tinyData(dir.path);
    const logs = join(dir.path, "runs");
    Deno.mkdirSync(logs);
    const args = tinyArgs(dir.path);
    const name = await runNameOf(args);
    const r = await inNamespace(`mount -t tmpfs -o size=64k none '${logs}'`, args);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /test accuracy of the online linear classifier/);
    const warnings = r.stderr.trim().split("\n").filter((l) => l.startsWith("logging stopped"));
    assert.equal(warnings.length, 1, r.stderr);
    assert.match(warnings[0], new RegExp(`^logging stopped: cannot write ${logs}/${name}/\\S+: No space left on device \\(os error 28\\); training goes on`));
    assert.match(r.stderr, /the logs in .* are incomplete/);
    const side = JSON.parse(Deno.readTextFileSync(join(dir.path, "models", `${name}.last.json`)));
    assert.deepEqual([side.epoch, side.step], [3, 10], "both epochs trained and checkpointed");
  },
});

Deno.test({
  name: "full disks: a full --model-dir is refused before writing, in one line; the previous checkpoint stays whole, no temp file stays",
  ignore: skipReason("full model disk", noMounts),
  async fn() {
    using dir = tempDir();
    const size = await weightsBytes(join(dir.path, "probe"));
    await tinyData(dir.path);
    const models = join(dir.path, "models");
    Deno.mkdirSync(models);
    const args = tinyArgs(dir.path);
    const name = await runNameOf(args);
    // Room for one checkpoint and its slack, not for a second one beside it.
    const fs = Math.round(1.6 * size + 1.1 * 2 ** 20);
    const r = await inNamespace(
      `mount -t tmpfs -o size=${fs} none '${models}'`,
      args,
      `ls -a '${models}'; cat '${models}/${name}.last.json'; sha256sum '${models}'/*.safetensors`,
    );
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], new RegExp(`^selfsup: not enough space for a checkpoint in ${models}: it needs [\\d.]+ MB, [\\d.]+ MB are free`));
    const listed = r.stdout.split("\n");
    assert.deepEqual(listed.filter((f) => f.includes(".tmp-")), [], "no temp file");
    const side = JSON.parse(r.stdout.slice(r.stdout.indexOf("{"), r.stdout.lastIndexOf("}") + 1));
    assert.ok(listed.includes(side.weights), "the sidecar names a weights file that is there");
    assert.match(r.stdout, new RegExp(`^${side.sha256}  ${models}/${side.weights.replace(/\./g, "\\.")}$`, "m"), "with the recorded checksum");
  },
});

Deno.test("full disks: a checkpoint write that fails halfway names the file and the cause in one line and leaves no temp file", async () => {
  using dir = tempDir();
  const size = await weightsBytes(join(dir.path, "probe"));
  await tinyData(dir.path);
  const args = tinyArgs(dir.path);
  const q = (s: string) => `'${s}'`;
  // bash's `ulimit -f` counts KiB; writes past it fail with EFBIG once SIGXFSZ is ignored.
  const cmd = `trap '' XFSZ; ulimit -f ${Math.floor(size / 2048)}; exec ${q(Deno.execPath())} run --allow-all --quiet ${q(MAIN)} ${args.map(q).join(" ")}`;
  const out = await new Deno.Command("bash", { args: ["-c", cmd], stdout: "piped", stderr: "piped" }).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  assert.equal(out.code, 1, stderr);
  const name = await runNameOf(args);
  const models = join(dir.path, "models");
  assert.equal(stderr, `selfsup: cannot write ${models}/${name}.last-5.safetensors: File too large (os error 27)`);
  assert.deepEqual(filesIn(models).filter((f) => !f.endsWith(".lock")), [], "no temp or partial file");
  assert.deepEqual(filesIn(models), [], "and the lock is released");
});
