/**
 * selfsup's command line (npm commander; see docs/DESIGN.md for why not
 * cliffy). Flags keep the reference programs' names; defaults suit one
 * machine (docs/REFERENCE-DEVIATIONS.md).
 *
 * @module
 */
import { Command } from "commander";
import {
  checkTrainable,
  type Config,
  ConfigError,
  DEFAULTS,
  type Layer,
  resolveLayers,
  type Settings,
  type Sources,
} from "./config.ts";
import { readConfigFile, settingsOf } from "./configfile.ts";
import { addTrainingFlags, closest, givenSettings, int } from "./flags.ts";
import { DEMO, PRESETS } from "./presets.ts";
import { launchLocal, LaunchError } from "./launch.ts";
import { registerEvalCommands } from "./evaluate.ts";
import { registerDataCommands } from "./data.ts";
import { type DataLayout, dataLayout } from "../train/data.ts";
import { foreignTo } from "../train/config.ts";
import { registerProjectCommands } from "./project.ts";
import { registerTensorboardCommand } from "./tensorboard.ts";
import { type RunResult, train } from "../train/loop.ts";
import { checkpointOf } from "../train/resume.ts";
import { version, writeDemoDataset } from "../ffi/native.ts";
import { NativeError } from "../ffi/lib.ts";
import { join } from "node:path";

/** The layers of settings, highest precedence first: flags, `--resume`'s checkpoint, `--config`, a preset, the demo. */
function layersOf(opts: Record<string, unknown>, base?: Partial<Settings>): Layer[] {
  const layers: Layer[] = [{ kind: "flag", source: "flag", settings: givenSettings(opts) }];
  if (typeof opts.resume === "string") {
    const saved = settingsOf(checkpointOf(opts.resume).side.config as unknown as Record<string, unknown>, opts.resume);
    layers.push({ kind: "file", source: `checkpoint ${opts.resume}`, settings: saved.settings });
  }
  const file = typeof opts.config === "string" ? readConfigFile(opts.config) : null;
  if (file) layers.push({ kind: "file", source: `config ${file.path}`, settings: file.settings });
  const name = (opts.preset as string | undefined) ?? file?.preset;
  if (name !== undefined) {
    const p = PRESETS[name];
    const where = opts.preset !== undefined ? "--preset" : `${file!.path}: preset`;
    if (!p) throw new ConfigError(`${where}: unknown preset ${JSON.stringify(name)}; choose one of ${Object.keys(PRESETS).join(", ")}`);
    layers.push({ kind: "preset", source: `preset ${name}`, settings: p.settings });
  }
  if (base) layers.push({ kind: "preset", source: "demo", settings: base });
  return layers;
}

/** The settings chosen from the data, as a line, or null when none was. */
function chosenLine(cfg: Config, sources: Sources): string | null {
  const flags: [keyof Settings, string][] = [
    ["imageSizeOverride", `--image-size-override ${cfg.imageSizeOverride}`],
    ["arch", `--arch ${cfg.arch}`],
    ["smallStem", cfg.smallStem ? "--small-stem" : "--no-small-stem"],
    ["batchSize", `--batch-size ${cfg.batchSize}`],
  ];
  const given = (s: string | undefined) => s === undefined || s === "flag" || /^(config|checkpoint|preset|demo)\b/.test(s);
  const chosen = flags.filter(([k]) => !given(sources[k])).map(([k, f]) => `${f} (${sources[k]})`);
  return chosen.length ? `chosen for this data: ${chosen.join(", ")}; --print-config shows every setting's source` : null;
}

/**
 * Resolves the run (flags > --resume's checkpoint > --config > preset >
 * defaults, some following the data and the machine); `--print-config`
 * prints it and exits; otherwise it trains, on a machine with several GPUs
 * as one replica per GPU.
 */
async function trainOrPrint(opts: Record<string, unknown>, base?: Partial<Settings>) {
  const layers = layersOf(opts, base);
  const pick = <K extends keyof Settings>(k: K) => layers.find((l) => l.settings[k] !== undefined)?.settings[k];
  const dataDir = pick("dataDir") ?? DEFAULTS.dataDir;
  if (base === DEMO && !opts.printConfig) await ensureDemoData(dataDir);
  let layout: DataLayout | null = null;
  try {
    layout = dataLayout(dataDir);
  } catch (e) {
    // --print-config works without the data; its values then do not follow it.
    if (!opts.printConfig) throw e;
  }
  const gpus = pick("noCuda") ? 0 : version().cudaDevices;
  const data = layout ? { samples: layout.train.samples, imageSize: layout.train.imageSize } : undefined;
  const { config: cfg, sources } = resolveLayers(layers, Deno.env.toObject(), { gpus, data });
  if (opts.printConfig) {
    // Other methods' settings do not apply to this run.
    const shown = Object.fromEntries(Object.entries(cfg).filter(([k]) => !foreignTo(cfg.method, k)));
    console.log(JSON.stringify({ ...shown, sources }, null, 2));
    return;
  }
  const replicas = localReplicas(cfg, sources, gpus);
  if (replicas > 1) {
    console.error(`starting ${replicas} replicas on this machine (one per ${gpus ? "GPU" : "process"}), as selfsup launch --nproc ${replicas}`);
    // The launcher runs no native code, so exiting cannot interrupt any.
    Deno.exit(await launchLocal(replicas, Deno.args));
  }
  checkTrainable(cfg);
  const chosen = cfg.rank === 0 ? chosenLine(cfg, sources) : null;
  if (chosen) console.log(chosen);
  const resumeFrom = typeof opts.resume === "string" ? opts.resume : undefined;
  printResult(await train(cfg, console.log, { layout: layout!, resumeFrom }));
}

/**
 * Replicas this process starts itself: several when nothing started it as
 * one of several (no launcher, rank or master) and one machine holds them
 * all: one per GPU, or CPU processes on a machine without GPUs.
 */
export function localReplicas(cfg: Config, sources: Sources, gpus: number): number {
  if (cfg.worldSize <= 1 || cfg.master !== null || cfg.launchedBy !== "flags" || sources.distributedRank === "flag") return 0;
  if (gpus > 0 && cfg.worldSize > gpus) {
    throw new ConfigError(
      `--num-replicas ${cfg.worldSize}, but this machine has ${gpus} GPU${gpus === 1 ? "" : "s"}: on several machines start the replicas ` +
        `with torchrun or srun (slurm/run.sh), or pass --distributed-master and --distributed-rank; or use --num-replicas ${gpus}`,
    );
  }
  return cfg.worldSize;
}

/** A run's result: the online probe's test accuracy, or, without labels, its losses and what to do next. */
function printResult(r: RunResult): void {
  const last = r.last;
  if (r.alreadyFinished) {
    console.log(`${r.runName} is finished: it trained all ${last?.epoch ?? "its"} epochs (${r.checkpoint}); raise --epochs to train on, or pass --no-resume to start over`);
  }
  if (!last) return;
  if (last.labelled && last.test) {
    const chance = 100 / r.classes.length;
    console.log(
      `test accuracy of the online linear classifier after epoch ${last.epoch}: top-1 ${last.test.top1.toFixed(2)} % (chance ${
        chance.toFixed(2)
      } %), top-5 ${last.test.top5.toFixed(2)} %`,
    );
    return;
  }
  const loss = (m: { sslLoss: number }) => m.sslLoss.toFixed(4);
  const test = last.test ? `, ${loss(last.test)} on test/` : "";
  const accuracy = last.labelled ? " (no labelled test/: no test accuracy)" : "";
  console.log(`self-supervised loss after epoch ${last.epoch}: ${loss(last.train)} on the training images${test}${accuracy}`);
  console.log(
    `use the backbone: selfsup export ${r.checkpoint} backbone.safetensors; score it with selfsup eval knn --checkpoint ${r.checkpoint} --data-dir <labelled folder>`,
  );
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
    // One line: commander's "(Did you mean …?)" joins its error.
    .configureOutput({ outputError: (s, write) => write(s.trim().split("\n").join(" ") + "\n") });

  addTrainingFlags(
    prog.command("train", { isDefault: true }).description("pre-train with SimCLR or BYOL on a folder of images (labels optional)"),
  ).action((opts) => trainOrPrint(opts));

  addTrainingFlags(
    prog.command("demo").description("short SimCLR run on the built-in data set (CPU), then its test accuracy"),
    DEMO,
  ).action((opts) => trainOrPrint(opts, DEMO));

  prog.command("presets").description("the presets for --preset, with their settings").action(() => {
    for (const [name, p] of Object.entries(PRESETS)) console.log(`${name}: ${p.about}\n  ${JSON.stringify(p.settings)}`);
  });

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

  registerTensorboardCommand(prog);

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

/**
 * `train` is the default command, so commander would take a misspelt
 * command for train's argument; this says what it is instead.
 */
function checkCommand(prog: Command, args: string[]): void {
  const first = args[0];
  if (first === undefined || first.startsWith("-")) return;
  const names = prog.commands.flatMap((c) => [c.name(), ...c.aliases()]);
  if (names.includes(first) || first === "help") return;
  const near = closest(first, names);
  throw new ConfigError(`unknown command '${first}'${near ? ` (Did you mean ${near}?)` : ""}; run with --help for the commands`);
}

if (import.meta.main) {
  try {
    const prog = program();
    checkCommand(prog, Deno.args);
    await prog.parseAsync(Deno.args, { from: "user" });
  } catch (e) {
    // Bad input is one line, never a stack trace.
    const known = e instanceof ConfigError || e instanceof NativeError || e instanceof LaunchError;
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    console.error(`selfsup: ${msg}`);
    if (!known && Deno.env.get("SELFSUP_DEBUG")) console.error(e);
    Deno.exitCode = 1;
  }
}
