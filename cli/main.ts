/**
 * selfsup's command line (npm commander; see docs/DESIGN.md for why not
 * cliffy). Flags keep the reference programs' names and defaults.
 *
 * @module
 */
import { Command } from "commander";
import { checkTrainable, type Config, ConfigError, DEMO, METHOD_ONLY, resolve, type Settings } from "./config.ts";
import { addTrainingFlags, givenSettings, int } from "./flags.ts";
import { launchLocal, LaunchError } from "./launch.ts";
import { registerEvalCommands } from "./evaluate.ts";
import { registerDataCommands } from "./data.ts";
import { registerProjectCommands } from "./project.ts";
import { train } from "../train/loop.ts";
import { version, writeDemoDataset } from "../ffi/native.ts";
import { NativeError } from "../ffi/lib.ts";
import { join } from "node:path";

/** `--print-config` prints and exits; otherwise the run is checked and trained. */
async function trainOrPrint(opts: Record<string, unknown>, base: Partial<Settings>, before?: (c: Config) => Promise<void>) {
  const cfg = resolve(givenSettings(opts), base, Deno.env.toObject());
  if (opts.printConfig) {
    // The other method's flags do not apply to this run.
    const other = METHOD_ONLY[cfg.method === "simclr" ? "byol" : "simclr"];
    console.log(JSON.stringify(Object.fromEntries(Object.entries(cfg).filter(([k]) => !other.includes(k as keyof Settings))), null, 2));
    return;
  }
  checkTrainable(cfg);
  if (before) await before(cfg);
  await runTraining(cfg);
}

async function runTraining(cfg: Config): Promise<void> {
  const result = await train(cfg);
  const last = result.epochs.at(-1);
  if (last) {
    const chance = 100 / result.classes.length;
    console.log(
      `test accuracy of the online linear classifier: top-1 ${last.test.top1.toFixed(2)} % (chance ${
        chance.toFixed(2)
      } %), top-5 ${last.test.top5.toFixed(2)} %`,
    );
  }
}

/** The demo data set, generated on first use. */
async function ensureDemoData(dir: string): Promise<void> {
  try {
    await Deno.stat(join(dir, "train"));
    return;
  } catch { /* generate it */ }
  console.log(`generating the demo data set in ${dir} (10 classes of shapes, 32x32)`);
  await writeDemoDataset(dir, { seed: 0 });
}

export function program(): Command {
  const prog = new Command("selfsup")
    // `launch` passes everything after its own options to the replicas.
    .enablePositionalOptions()
    .description("Self-supervised image representation learning (SimCLR, BYOL) on libtorch")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (s, write) => write(s.split("\n")[0] + "\n") });

  addTrainingFlags(
    prog.command("train", { isDefault: true }).description("pre-train with SimCLR or BYOL on an ImageFolder"),
  ).action((opts) => trainOrPrint(opts, {}));

  addTrainingFlags(
    prog.command("demo").description("short SimCLR run on the built-in data set (CPU), then its test accuracy"),
  ).action((opts) => trainOrPrint(opts, DEMO, (cfg) => ensureDemoData(cfg.dataDir)));

  prog.command("data")
    .description("make data sets")
    .command("demo <dir>")
    .description("write the built-in demo data set as an ImageFolder")
    .option("--seed <n>", "generator seed", int("--seed"), 0)
    .action(async (dir: string, o: { seed: number }) => {
      await writeDemoDataset(dir, { seed: o.seed });
      console.log(`wrote ${dir}`);
    });

  registerDataCommands(prog);

  registerEvalCommands(prog);

  prog.command("launch")
    .description("run N replicas of a selfsup command on this machine (one per GPU, or CPU), as torchrun does")
    .usage("--nproc <n> [--master-port <port>] [train|demo] [flags...]")
    .requiredOption("--nproc <n>", "number of replicas (processes)", int("--nproc"))
    .option("--master-port <port>", "rendezvous port (default: a free one)", int("--master-port"))
    .argument("[command...]", "the selfsup command and its flags (default: train)")
    .addHelpText(
      "after",
      "\nThe replicas meet at rank 0's rendezvous store on 127.0.0.1, which listens on loopback only: nothing\n" +
        "outside this machine can reach it. Across machines (--distributed-master, torchrun, SLURM) the store\n" +
        "has no authentication, as torchrun's; how to keep it on a trusted network: docs/DISTRIBUTED.md.",
    )
    .allowUnknownOption()
    .passThroughOptions()
    .action(async (command: string[], o: { nproc: number; masterPort?: number }) => {
      const args = command.length === 0 || command[0].startsWith("-") ? ["train", ...command] : command;
      // Exit now: a replica's leftover children may still hold relayed pipes.
      // The launcher runs no native code, so exiting cannot interrupt any.
      Deno.exit(await launchLocal(o.nproc, args, { port: o.masterPort }));
    });

  prog.command("version").description("versions of selfsup, libtorch and CUDA").action(() => {
    console.log(JSON.stringify(version()));
  });

  registerProjectCommands(prog);
  return prog;
}

if (import.meta.main) {
  try {
    await program().parseAsync(Deno.args, { from: "user" });
  } catch (e) {
    // Bad input is one line, never a stack trace.
    const known = e instanceof ConfigError || e instanceof NativeError || e instanceof LaunchError;
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    console.error(`selfsup: ${msg}`);
    if (!known && Deno.env.get("SELFSUP_DEBUG")) console.error(e);
    Deno.exitCode = 1;
  }
}
