/**
 * selfsup's command line (npm commander; see docs/DESIGN.md for why not
 * cliffy). Flags keep the reference programs' names and defaults.
 *
 * @module
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { type Config, ConfigError, DEFAULTS, DEMO, validate } from "./config.ts";
import { train } from "../train/loop.ts";
import { version, writeDemoDataset } from "../ffi/native.ts";
import { NativeError } from "../ffi/lib.ts";
import { join } from "node:path";

function int(flag: string) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${flag} needs an integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
}

function float(flag: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n)) {
      throw new InvalidArgumentError(`${flag} needs a number, got ${JSON.stringify(v)}`);
    }
    return n;
  };
}

/** Adds the training flags, grouped as in the reference's --help. */
function trainingOptions(cmd: Command, d: Config): Command {
  const opt = (flags: string, help: string, parse?: (v: string) => unknown, def?: unknown) => {
    const o = new Option(flags, help);
    if (parse) o.argParser(parse as (v: string, p: unknown) => unknown);
    if (def !== undefined && def !== null) o.default(def);
    cmd.addOption(o);
  };
  opt("--task <name>", "data loader (multi_augment_image_folder)", undefined, d.task);
  opt("--batch-size <n>", "global batch size, split over replicas", int("--batch-size"), d.batchSize);
  opt("--epochs <n>", "number of epochs", int("--epochs"), d.epochs);
  opt("--image-size-override <px>", "train crop and test resize size", int("--image-size-override"), d.imageSizeOverride);
  opt("--data-dir <dir>", "folder holding train/ and test/ (ImageFolder)", undefined, d.dataDir);
  opt("--uid <text>", "prefix of the run name", undefined, d.uid);
  opt("-a, --arch <name>", "backbone: resnet18/34/50/101/152, wide_resnet50_2", undefined, d.arch);
  opt("--small-stem", "3x3 stem conv without max-pool (for 32 px images)");
  opt("--representation-size <n>", "backbone feature width (512 for resnet18/34)", int("--representation-size"), d.representationSize);
  opt("--head-latent-size <n>", "hidden width of the projection head", int("--head-latent-size"), d.headLatentSize);
  opt("--nce-size <n>", "output width of the projection head", int("--nce-size"), d.nceSize);
  opt("--nce-temperature <t>", "NT-Xent temperature", float("--nce-temperature"), d.nceTemperature);
  opt("--model-dir <dir>", "where weights are saved", undefined, d.modelDir);
  opt("--color-jitter-strength <s>", "s in ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)", float("--color-jitter-strength"), d.colorJitterStrength);
  opt("--weight-decay <wd>", "L2 on weights with >= 2 dims", float("--weight-decay"), d.weightDecay);
  opt("--clip <v>", "element-wise gradient value clipping (0: off)", float("--clip"), d.clip);
  opt("--lr <lr>", "base learning rate (x global batch / 256 for SGD/LARS)", float("--lr"), d.lr);
  opt("--lr-update-schedule <s>", "cosine or fixed", undefined, d.lrUpdateSchedule);
  opt("--warmup <epochs>", "linear warmup length in epochs (stepped per iteration)", int("--warmup"), d.warmup);
  opt("--optimizer <name>", "lars_momentum, lars_sgd, momentum or sgd", undefined, d.optimizer);
  opt("--num-replicas <n>", "number of replicas (only 1 for now)", int("--num-replicas"), d.numReplicas);
  opt("--workers-per-replica <n>", "loader threads per replica", int("--workers-per-replica"), d.workersPerReplica);
  opt("--debug-step", "one minibatch per pass");
  opt("--seed <n>", "seed for weights, shuffling and augmentations", int("--seed"), d.seed);
  opt("--no-cuda", "train on the CPU even when a GPU is present");
  opt("--threads <n>", "libtorch intra-op threads (0: all cores)", int("--threads"), d.threads);
  return cmd;
}

function resolve(opts: Record<string, unknown>, base: Config): Config {
  const c = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(opts)) if (v !== undefined && k in base) c[k] = v;
  // commander turns --no-cuda into cuda=false
  if (opts.cuda === false) c.noCuda = true;
  return validate(c as unknown as Config);
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
    .description("Self-supervised image representation learning (SimCLR) on libtorch")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ outputError: (s, write) => write(s.split("\n")[0] + "\n") });

  trainingOptions(
    prog.command("train", { isDefault: true }).description("pre-train with SimCLR on an ImageFolder"),
    DEFAULTS,
  ).action(async (opts) => await runTraining(resolve(opts, DEFAULTS)));

  const demo = { ...DEFAULTS, ...DEMO } as Config;
  trainingOptions(
    prog.command("demo").description("short SimCLR run on the built-in data set (CPU), then its test accuracy"),
    demo,
  ).action(async (opts) => {
    const cfg = resolve(opts, demo);
    await ensureDemoData(cfg.dataDir);
    await runTraining(cfg);
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

  prog.command("version").description("versions of selfsup, libtorch and CUDA").action(() => {
    console.log(JSON.stringify(version()));
  });
  return prog;
}

if (import.meta.main) {
  try {
    await program().parseAsync(Deno.args, { from: "user" });
  } catch (e) {
    // Bad input is one line, never a stack trace.
    const known = e instanceof ConfigError || e instanceof NativeError;
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    console.error(`selfsup: ${msg}`);
    if (!known && Deno.env.get("SELFSUP_DEBUG")) console.error(e);
    Deno.exitCode = 1;
  }
}
