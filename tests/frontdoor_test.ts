/**
 * The front door (./selfsup) and the Deno tasks as a user meets them: they
 * work from any directory with the caller's relative paths, write nothing
 * in the install once it is set up, and `test` answers --help and takes a
 * filter. (Findings 19.5 and 19.8 are named in the tests that pin them.)
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { tempDir } from "./helpers.ts";

const ROOT = join(import.meta.dirname!, "..");
const FRONT = join(ROOT, "selfsup");

async function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, cwd, env, stdout: "piped", stderr: "piped" }).output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

Deno.test("finding 19.5: relative paths are the caller's, through ./selfsup and deno task", async () => {
  using tmp = tempDir("selfsup-cwd-");
  // 20 training images in the caller's folder: found, then refused as fewer
  // than one batch (no training needed to show which folder was read).
  await writeDemoDataset(join(tmp.path, "data"), { seed: 1, trainPerClass: 2, testPerClass: 1, size: 16 });
  const flags = [
    "--num-replicas",
    "1",
    "--data-dir",
    "data",
    "--batch-size",
    "64",
    "--no-cuda",
    "--model-dir",
    "m",
  ];
  const viaFront = await run(FRONT, ["train", ...flags], tmp.path);
  const viaTask = await run(Deno.execPath(), [
    "task",
    "--quiet",
    "--config",
    join(ROOT, "deno.json"),
    "train",
    ...flags,
  ], tmp.path);
  for (const [how, r] of [["./selfsup", viaFront], ["deno task", viaTask]] as const) {
    assert.equal(r.code, 1, `${how}: ${r.stdout}${r.stderr}`);
    // The folder is the caller's, named as given or resolved in the caller's directory.
    const caller = tmp.path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
    assert.match(r.stderr, new RegExp(`^selfsup: (${caller}/)?data/train has 20 images, fewer than one batch of 64`, "m"), how);
  }
  // Nothing landed in the install.
  for (const p of ["data", "m"]) {
    assert.throws(() => Deno.statSync(join(ROOT, p)), Deno.errors.NotFound, `${p} in ${ROOT}`);
  }
});

/**
 * Files and folders under `dir` changed or made since `since` (ms), but
 * .git/ and node_modules/.deno/ itself: Deno makes and removes a lock file
 * there on every start (`.deno.lock.poll`), which changes the folder's time
 * and, read-only, is skipped (the test below).
 */
function changedSince(dir: string, since: number, rel = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(join(dir, rel))) {
    const p = join(rel, e.name);
    if (p === ".git") continue;
    if (p === join("node_modules", ".deno")) {
      out.push(...changedSince(dir, since, p));
      continue;
    }
    const st = Deno.lstatSync(join(dir, p));
    if ((st.mtime?.getTime() ?? 0) >= since || (st.ctime?.getTime() ?? 0) >= since) out.push(p);
    if (e.isDirectory) out.push(...changedSince(dir, since, p));
  }
  return out;
}

Deno.test("finding 19.8: once set up, a call of ./selfsup writes nothing in the install", async () => {
  using tmp = tempDir("selfsup-ro-");
  // The first call sets up what it needs (here: nothing, already done).
  assert.equal((await run(FRONT, ["version"], tmp.path)).code, 0);
  // File times have a coarse grain on some file systems: start past it.
  await new Promise((r) => setTimeout(r, 1100));
  const since = Date.now();
  const r = await run(FRONT, ["version"], tmp.path);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /"libtorch":"2\.11\.0"/);
  // Directories whose entries changed show up too (a file made and removed).
  assert.deepEqual(changedSince(ROOT, since - 1000), []);
});

const nobody = Deno.uid() === 0 &&
  new Deno.Command("sh", { args: ["-c", "command -v setpriv"], stdout: "null" }).outputSync().success;

Deno.test({
  name: "finding 19.8: a user who cannot write the install runs it",
  ignore: !nobody,
  async fn() {
    using home = tempDir("selfsup-nobody-");
    Deno.chmodSync(home.path, 0o777);
    // As "nobody", for whom the install (owned by root) is read-only.
    const r = await run("setpriv", [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "env",
      `HOME=${home.path}`,
      FRONT,
      "version",
    ], home.path);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /"libtorch":"2\.11\.0"/);
    assert.equal(r.stderr, "");
  },
});

Deno.test("./selfsup --help lists test, demo and bundle; test --help answers without testing", async () => {
  using tmp = tempDir("selfsup-help-");
  const top = await run(FRONT, ["--help"], tmp.path);
  assert.equal(top.code, 0, top.stderr);
  for (const cmd of ["train", "demo", "test", "bundle", "launch"]) {
    assert.match(top.stdout, new RegExp(`^  ${cmd}\\b`, "m"), cmd);
  }
  const help = await run(FRONT, ["test", "--help"], tmp.path);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^Usage: selfsup test \[options\] \[filter\]/);
  assert.doesNotMatch(help.stdout + help.stderr, /\d+ passed|== cargo test/);
});

Deno.test("./selfsup test <filter> runs the matching tests of both suites", async () => {
  using tmp = tempDir("selfsup-filter-");
  // One cargo test matches this name (native/src/augment/blur.rs), no Deno test.
  const r = await run(FRONT, ["test", "kernel_sizes_follow_the_reference"], tmp.path);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /^test result: ok\. 1 passed; 0 failed; 0 ignored; 0 measured; \d+ filtered out/m);
  // (Deno may colour its summary line.)
  // deno-lint-ignore no-control-regex
  assert.match(r.stdout.replace(/\x1b\[[0-9;]*m/g, ""), /^ok \| 0 passed \| 0 failed \| \d+ filtered out/m);
  assert.match(r.stdout, /^1 passed, 0 failed, 0 skipped$/m);
});
