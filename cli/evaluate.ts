/**
 * `selfsup export` (a checkpoint's backbone with torchvision's key names)
 * and `selfsup eval linear|knn` (a frozen backbone judged on an
 * ImageFolder's train/ and test/ splits).
 *
 * @module
 */
import { type Command, Option } from "commander";
import { basename, dirname, join } from "node:path";
import { ARCHS, type Config, ConfigError, featureSize, resolve } from "./config.ts";
import { float, int } from "./flags.ts";
import { type Classifier, type FeatureWeights, Loader, scanFolder, Trainer, version } from "../ffi/native.ts";
import { checkWeights, readSidecar, type Sidecar } from "../train/checkpoint.ts";
import { parseSafetensors, type RawTensor, writeSafetensors } from "../train/safetensors.ts";

const WEIGHTS = ["online", "polyak", "target"];

/**
 * A checkpoint given as its sidecar (.json: the weights file it names) or
 * as a weights file (.safetensors: exactly that file, with the settings of
 * its run's sidecar). The checksum applies when the sidecar names the file.
 */
function checkpointOf(path: string): { side: Sidecar; sidePath: string; file: string; sha256: string | undefined } {
  const weightsGiven = path.endsWith(".safetensors");
  // <run>.<kind>-<step>.safetensors → <run>.<kind>.json
  const sidePath = weightsGiven ? path.replace(/-\d+\.safetensors$/, ".json") : path;
  const side = sidePath === path && weightsGiven ? null : readSidecar(sidePath);
  if (!side) {
    throw new ConfigError(
      weightsGiven
        ? `no sidecar ${sidePath} beside ${path}: a weights file needs its run's <run>.<kind>.json for the settings`
        : `no checkpoint at ${path} (expected a <run>.last.json or .best.json sidecar)`,
    );
  }
  const file = weightsGiven ? path : join(dirname(sidePath), side.weights);
  return { side, sidePath, file, sha256: basename(file) === side.weights ? side.sha256 : undefined };
}

/** The backbone tensors of a checkpoint under `weights`, with torchvision's names. */
export function backboneTensors(checkpoint: string, weights: FeatureWeights): { tensors: [string, RawTensor][]; side: Sidecar } {
  const { side, file, sha256 } = checkpointOf(checkpoint);
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(file);
  } catch (e) {
    throw new ConfigError(`cannot read ${file}: ${(e as Error).message.split("\n")[0]}`);
  }
  checkWeights(file, bytes, sha256);
  const { tensors } = parseSafetensors(bytes, file);
  if (weights === "target" && side.config.method !== "byol") throw new ConfigError("--weights target needs a BYOL checkpoint");
  if (weights === "polyak" && !(side.config.polyakEma > 0)) {
    throw new ConfigError("--weights polyak needs a checkpoint trained with --polyak-ema");
  }
  const prefix = weights === "target" ? "model.target.backbone." : "model.backbone.";
  const out: [string, RawTensor][] = [];
  for (const [name, t] of tensors) {
    if (!name.startsWith(prefix)) continue;
    const key = name.slice(prefix.length);
    // The Polyak average covers parameters; BN running statistics are the live ones.
    const averaged = weights === "polyak" ? tensors.get(`polyak.backbone.${key}`) : undefined;
    out.push([key, averaged ?? t]);
  }
  if (out.length === 0) throw new ConfigError(`${checkpoint} holds no backbone`);
  return { tensors: out, side };
}

/** Refuses an export whose output is the checkpoint it reads (its sidecar or its weights). */
function refuseOverwrite(out: string, checkpoint: string): void {
  const { side, sidePath, file } = checkpointOf(checkpoint);
  const inputs = [file, sidePath, join(dirname(sidePath), side.weights)];
  const same = (a: string, b: string) => {
    try {
      const [x, y] = [Deno.statSync(a), Deno.statSync(b)];
      return x.dev === y.dev && x.ino === y.ino;
    } catch {
      return false;
    }
  };
  if (inputs.some((i) => same(out, i))) {
    throw new ConfigError(`${out} is the checkpoint being exported; write the export to another file`);
  }
}

export function registerEvalCommands(prog: Command): void {
  prog.command("export <checkpoint> <out>")
    .description("write a checkpoint's backbone as safetensors with torchvision's key names (loads into torchvision.models.<arch>() with strict=False, missing only fc.*)")
    .addOption(new Option("--weights <which>", "online, polyak (Polyak average) or target (BYOL)").choices(WEIGHTS).default("online"))
    .action((checkpoint: string, out: string, o: { weights: FeatureWeights }) => {
      refuseOverwrite(out, checkpoint);
      const { tensors, side } = backboneTensors(checkpoint, o.weights);
      writeSafetensors(out, tensors, { arch: side.config.arch, method: side.config.method, weights: o.weights, run: side.config.runName });
      console.log(`wrote ${tensors.length} ${side.config.arch} tensors (${o.weights} weights) to ${out}`);
    });

  const evalCmd = prog.command("eval").description("evaluate a frozen backbone on an ImageFolder (train/ to fit, test/ to score)");
  const common = (c: Command) =>
    c.option("--checkpoint <path>", "a checkpoint (<run>.last.json / .best.json)")
      .option("--backbone <path>", "or an export (torchvision key names); needs --arch")
      .option("-a, --arch <name>", "backbone of --backbone")
      .option("--small-stem", "the --backbone uses the small stem")
      .option("--base-width <n>", "the --backbone's stem channels (default: 64)", int("--base-width"), 64)
      .addOption(new Option("--weights <which>", "online, polyak or target (BYOL)").choices(WEIGHTS).default("online"))
      .requiredOption("--data-dir <dir>", "folder holding train/ and test/")
      .option("--image-size-override <px>", "resize size (default: the checkpoint's)", int("--image-size-override"))
      .option("--batch-size <n>", "feature extraction batch", int("--batch-size"), 256)
      .option("--workers-per-replica <n>", "loader threads", int("--workers-per-replica"), 2)
      .option("--no-cuda", "use the CPU even when a GPU is present");
  common(evalCmd.command("linear"))
    .description("linear classifier on frozen, standardised features of the resized train images (SGD-momentum, cosine schedule); top-1/top-5 on test")
    .option("--epochs <n>", "classifier epochs", int("--epochs"), 100)
    .option("--lr <lr>", "classifier learning rate", float("--lr"), 0.1)
    .option("--weight-decay <wd>", "classifier weight decay", float("--weight-decay"), 1e-4)
    .action(async (o) => {
      const how: Classifier = { linear: { epochs: o.epochs, lr: o.lr, weightDecay: o.weightDecay, batchSize: 256, seed: 0 } };
      await evaluate(o, how, "linear");
    });
  common(evalCmd.command("knn"))
    .description("weighted kNN on cosine similarity of frozen features (k neighbours vote with exp(s/T))")
    .option("--k <n>", "neighbours", int("--k"), 200)
    .option("--temperature <t>", "vote temperature", float("--temperature"), 0.1)
    .action(async (o) => {
      await evaluate(o, { knn: { k: o.k, temperature: o.temperature } }, "knn");
    });
}

interface EvalOptions {
  checkpoint?: string;
  backbone?: string;
  arch?: string;
  smallStem?: boolean;
  baseWidth: number;
  weights: FeatureWeights;
  dataDir: string;
  imageSizeOverride?: number;
  batchSize: number;
  workersPerReplica: number;
  cuda: boolean;
}

/** The model settings: a checkpoint's, or an export's --arch. */
function modelConfig(o: EvalOptions): Config {
  if (o.checkpoint && o.backbone) throw new ConfigError("give --checkpoint or --backbone, not both");
  if (o.checkpoint) return checkpointOf(o.checkpoint).side.config;
  if (!o.backbone) throw new ConfigError("give --checkpoint <sidecar> or --backbone <export> --arch <name>");
  if (!o.arch || !(o.arch in ARCHS)) throw new ConfigError(`--backbone needs --arch, one of ${Object.keys(ARCHS).join(", ")}`);
  return resolve({ arch: o.arch, baseWidth: o.baseWidth, representationSize: featureSize(o.arch, o.baseWidth), smallStem: !!o.smallStem, numReplicas: 1 });
}

/** Extracts features of both splits, fits and scores; prints one result line and returns it. */
export async function evaluate(o: EvalOptions, how: Classifier, label: string): Promise<{ top1: number; top5: number }> {
  const cfg = modelConfig(o);
  const { classes } = scanFolder(join(o.dataDir, "train"));
  const cuda = o.cuda !== false && version().cuda;
  using trainer = await Trainer.create({ ...cfg, device: cuda ? "cuda" : "cpu", numClasses: classes.length, seed: cfg.seed ?? 0 });
  if (o.checkpoint) {
    const { file, sha256 } = checkpointOf(o.checkpoint);
    await trainer.loadCheckpoint(file, sha256);
  }
  else await trainer.loadBackbone(o.backbone!);
  const size = o.imageSizeOverride ?? cfg.imageSizeOverride;
  for (const split of ["train", "test"] as const) {
    using loader = await Loader.create({
      dataDir: o.dataDir,
      split,
      batchSize: o.batchSize,
      imageSize: size,
      augment: false,
      workers: o.workersPerReplica,
    });
    loader.startEpoch(0);
    for (let b = await loader.next(); b; b = await loader.next()) await trainer.embed(b, split, o.weights);
  }
  const r = await trainer.classify(classes.length, how);
  console.log(`${label} evaluation (${o.weights} weights, ${cfg.arch}): top-1 ${r.top1.toFixed(2)} %, top-5 ${r.top5.toFixed(2)} %`);
  return r;
}
