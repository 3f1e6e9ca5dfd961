/**
 * Faults between replicas, through the CLI as a user meets them: a rank
 * that is killed or stops answering ends the other with a one-line error
 * within --distributed-timeout, never a hang; a port in use is a clear
 * error; a replica that fails under `selfsup launch` is reported as it
 * happens.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { tempDir } from "./helpers.ts";

const MAIN = join(import.meta.dirname!, "..", "cli", "main.ts");
const TIMEOUT_S = 8;

/** A small run that lasts long enough to be interrupted. */
function trainArgs(dir: string, epochs = 50, timeout = TIMEOUT_S): string[] {
  // deno-fmt-ignore
  return [
    "train", "--data-dir", join(dir, "data"), "--model-dir", join(dir, "models"), "--log-dir", join(dir, "runs"),
    "-a", "resnet18", "--representation-size", "512", "--head-latent-size", "16", "--nce-size", "8", "--small-stem",
    "--image-size-override", "8", "--batch-size", "4", "--epochs", String(epochs), "--warmup", "0", "--optimizer", "momentum",
    "--lr", "0.01", "--workers-per-replica", "1", "--threads", "1", "--distributed-timeout", String(timeout), "--no-cuda",
  ];
}

function rank(args: string[], env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

function torchrunEnv(r: number, world: number, port: number): Record<string, string> {
  return {
    RANK: String(r),
    WORLD_SIZE: String(world),
    LOCAL_RANK: String(r),
    MASTER_ADDR: "127.0.0.1",
    MASTER_PORT: String(port),
  };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Collects a stream's text; resolves `seen` once `pattern` appears in it. */
function watch(stream: ReadableStream<Uint8Array>, pattern: RegExp) {
  let text = "";
  const { promise: seen, resolve: found } = Promise.withResolvers<void>();
  const done = (async () => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      if (pattern.test(text)) found();
    }
    return text;
  })();
  return { seen, done };
}

async function demoData(dir: string): Promise<void> {
  await writeDemoDataset(join(dir, "data"), { seed: 1, trainPerClass: 2, testPerClass: 1, size: 16 });
}

/** The last non-empty line of a process's stderr. */
function lastLine(text: string): string {
  return text.trim().split("\n").at(-1) ?? "";
}

for (const [how, signal] of [["killed", "SIGKILL"], ["stopped (hung)", "SIGSTOP"]] as const) {
  Deno.test(`a rank that is ${how} ends the other with a one-line error within the timeout`, async () => {
    using tmp = tempDir("selfsup-dist-fault-");
    await demoData(tmp.path);
    const port = freePort();
    const r0 = rank(trainArgs(tmp.path), torchrunEnv(0, 2, port));
    const r1 = rank(trainArgs(tmp.path), torchrunEnv(1, 2, port));
    const out0 = watch(r0.stdout, /train-0\[Epoch 1\]/);
    const err0 = watch(r0.stderr, /$^/);
    const out1 = watch(r1.stdout, /train-1\[Epoch 1\]/);
    const err1 = watch(r1.stderr, /$^/);
    // Both trained a whole epoch together; then rank 1 goes away.
    await Promise.all([out0.seen, out1.seen]);
    const t0 = performance.now();
    r1.kill(signal);
    const status = await r0.status;
    const secs = (performance.now() - t0) / 1000;
    if (signal === "SIGSTOP") r1.kill("SIGKILL");
    await r1.status;
    const [stderr] = await Promise.all([err0.done, out0.done, out1.done, err1.done]);
    assert.notEqual(status.code, 0, "rank 0 must fail");
    // The timeout bounds each collective; allow for process exit on a busy machine.
    assert.ok(secs < 5 * TIMEOUT_S, `rank 0 took ${secs.toFixed(1)} s to give up`);
    const line = lastLine(stderr);
    assert.match(line, /^selfsup: rank 0: another rank (stopped or was killed|did not take part)/, stderr);
    assert.ok(!/frame #|Exception raised/.test(stderr), `no C++ backtrace: ${stderr}`);
  });
}

Deno.test("a port already in use is a one-line error", async () => {
  using tmp = tempDir("selfsup-dist-port-");
  await demoData(tmp.path);
  using busy = Deno.listen({ hostname: "0.0.0.0", port: 0 });
  const port = (busy.addr as Deno.NetAddr).port;
  const r0 = rank(trainArgs(tmp.path, 1), torchrunEnv(0, 2, port));
  const out = await r0.output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1);
  assert.equal(
    lastLine(stderr),
    `selfsup: rank 0 cannot serve the rendezvous on port ${port}: the port is already in use; choose another --distributed-port (or MASTER_PORT)`,
  );
});

Deno.test("a failing replica under selfsup launch is a one-line error, without waiting for a rendezvous", async () => {
  using tmp = tempDir("selfsup-dist-launch-");
  // No data written: every replica fails before it joins. A rendezvous would
  // wait the whole timeout, far longer than two start-ups on a busy machine.
  const timeout = 120;
  const args = trainArgs(tmp.path, 1, timeout);
  const t0 = performance.now();
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--quiet", MAIN, "launch", "--nproc", "2", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 1, stderr);
  assert.ok((performance.now() - t0) / 1000 < timeout, "no wait for a rendezvous");
  // Whichever rank fails first says why; the launcher then stops the other.
  assert.match(stderr, /^(\[rank 1\] )?selfsup: --data-dir .*\/data: no such folder$/m);
  assert.match(stderr, /^selfsup launch: rank [01] exited with code 1; stopping the other ranks$/m);
});
