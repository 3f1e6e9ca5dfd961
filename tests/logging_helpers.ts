/** Shared bits of the tests/logging_*_test.ts files. */
import { python } from "./helpers.ts";

/**
 * Why a test that needs Python `module` cannot run here, or null when it
 * can. scripts/bootstrap.sh installs tensorboard and visdom into its venv.
 */
export function missingPython(module: string): string | null {
  if (!python) return "SELFSUP_PYTHON is not set (run through ./selfsup or source .cache/env.sh)";
  const r = new Deno.Command(python, { args: ["-c", `import ${module}`], stdout: "null", stderr: "null" })
    .outputSync();
  return r.success ? null : `${python} cannot import ${module} (scripts/bootstrap.sh installs it)`;
}

/** Prints why a test is skipped, so a skip is never silent. */
export function skipReason(test: string, reason: string | null): boolean {
  if (reason) console.log(`skipping "${test}": ${reason}`);
  return reason !== null;
}

/** Pass metrics whose values tell the tags apart: loss b, SSL b-1, linear 1, top-1 10b, top-5 20b. */
export const METRICS = (base: number) => ({
  loss: base,
  sslLoss: base - 1,
  linearLoss: 1,
  top1: 10 * base,
  top5: 20 * base,
});

/** A TCP port on loopback that nothing listens on right now. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** A real visdom server on loopback, for one test; `close()` stops it. */
export async function startVisdom(envPath: string): Promise<{ port: number; close: () => Promise<void> }> {
  const port = freePort();
  // Its own main() skips the script download that `python -m visdom.server` tries first.
  const child = new Deno.Command(python, {
    args: [
      "-c",
      "from visdom.server.run_server import main; main()",
      "-port",
      String(port),
      "--hostname",
      "127.0.0.1",
      "-bind_local",
      "-env_path",
      envPath,
      "-logging_level",
      "ERROR",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const close = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    await child.status;
  };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/env_state`, { method: "POST", body: "{}" });
      await r.body?.cancel();
      if (r.ok) return { port, close };
    } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 200));
  }
  await close();
  throw new Error(`the visdom server did not answer on port ${port} within 30 s`);
}

/** Every window of visdom environment `env`: window id → its stored JSON. */
export async function visdomWindows(
  port: number,
  env: string,
): Promise<Record<string, Record<string, unknown>>> {
  const r = await fetch(`http://127.0.0.1:${port}/win_data`, {
    method: "POST",
    body: JSON.stringify({ eid: env, win: null }),
  });
  if (!r.ok) throw new Error(`win_data: HTTP ${r.status}`);
  const all = JSON.parse(await r.text()) as Record<string, Record<string, unknown>>;
  return all;
}
