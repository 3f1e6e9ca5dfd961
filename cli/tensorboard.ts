/**
 * `selfsup tensorboard [--logdir DIR] [tensorboard flags…]`: TensorBoard
 * on the run logs, the one the set-up installed into its venv (beside
 * `SELFSUP_PYTHON`), else one that Python or `PATH` has; when there is
 * none, a one-line hint that works.
 *
 * @module
 */
import type { Command } from "commander";
import { dirname, join } from "node:path";
import { ConfigError } from "./config.ts";

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

function onPath(name: string, env: Record<string, string | undefined>): string | null {
  for (const dir of (env.PATH ?? "").split(":")) {
    if (dir && isFile(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** How to start TensorBoard here: the venv's script, `python -m tensorboard.main`, or the one on PATH; null if none. */
export function tensorboardCommand(env: Record<string, string | undefined> = Deno.env.toObject()): string[] | null {
  const python = env.SELFSUP_PYTHON;
  if (python) {
    const script = join(dirname(python), "tensorboard");
    if (isFile(script)) return [script];
    const probe = new Deno.Command(python, { args: ["-c", "import tensorboard"], stdout: "null", stderr: "null" }).outputSync();
    if (probe.success) return [python, "-m", "tensorboard.main"];
  }
  const found = onPath("tensorboard", env);
  return found ? [found] : null;
}

export function registerTensorboardCommand(prog: Command): void {
  prog.command("tensorboard")
    .description("run TensorBoard on the run logs (the one ./selfsup installed); further flags go to tensorboard, e.g. --port 6007 --bind_all")
    .option("--logdir <dir>", "the runs' folder (train's --log-dir)", "./runs")
    .argument("[flags...]", "passed to tensorboard")
    .allowUnknownOption()
    .action(async (flags: string[], o: { logdir: string }) => {
      const cmd = tensorboardCommand();
      if (!cmd) {
        throw new ConfigError(
          `no tensorboard found: run ./selfsup once (it installs tensorboard into its venv under .cache/), or pip install tensorboard and run tensorboard --logdir ${o.logdir}`,
        );
      }
      console.error(`${cmd.join(" ")} --logdir ${o.logdir} ${flags.join(" ")}`.trim());
      const child = new Deno.Command(cmd[0], { args: [...cmd.slice(1), "--logdir", o.logdir, ...flags] }).spawn();
      // Ctrl-C and SIGTERM go to tensorboard; this process waits for it to end.
      const pass: [Deno.Signal, () => void][] = (["SIGINT", "SIGTERM"] as const).map((sig) => [sig, () => {
        try {
          child.kill(sig);
        } catch { /* already gone */ }
      }]);
      for (const [sig, f] of pass) Deno.addSignalListener(sig, f);
      try {
        Deno.exitCode = (await child.status).code;
      } finally {
        for (const [sig, f] of pass) Deno.removeSignalListener(sig, f);
      }
    });
}
