/**
 * `selfsup export` (a checkpoint's backbone with torchvision's key names,
 * plus what is needed to use it again: method, backbone, stem, width,
 * image size, epoch) and `selfsup eval linear|knn` (a frozen backbone
 * judged on a labelled folder's train/ and test/ splits).
 *
 * @module
 */
import { type Command, Option } from "commander";
import { dirname, join } from "node:path";
import { ARCHS, type Config, ConfigError, defaultsOf, featureSize, resolve } from "./config.ts";
import { dataLayout, loaderFolder, requireLabels } from "../train/data.ts";
import { isMethod, methodSpec, targetMethods } from "../train/config.ts";
import { float, int } from "./flags.ts";
import { type Classifier, type FeatureWeights, Loader, Trainer, version } from "../ffi/native.ts";
import { Progress } from "../train/progress.ts";
import { checkWeights, type Sidecar } from "../train/checkpoint.ts";
import { checkpointOf } from "../train/resume.ts";
import { parseSafetensors, type RawTensor, readSafetensors, readShapes, writeSafetensors } from "../train/safetensors.ts";

const WEIGHTS = ["online", "polyak", "target"];
/** The `format` of an export's metadata. */
export const EXPORT_FORMAT = "selfsup-backbone/1";

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
  if (weights === "target" && !(isMethod(side.config.method) && methodSpec(side.config.method).momentumTarget)) {
    throw new ConfigError(`--weights target needs a checkpoint of a method with a momentum target (${targetMethods()}), not ${side.config.method}`);
  }
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

/** An export's metadata (safetensors metadata values are strings). */
export function exportMetadata(side: Sidecar, weights: FeatureWeights): Record<string, string> {
  const c = side.config;
  return {
    format: EXPORT_FORMAT,
    method: c.method,
    arch: c.arch,
    smallStem: String(c.smallStem),
    baseWidth: String(c.baseWidth ?? 64),
    representationSize: String(c.representationSize),
    imageSize: String(c.imageSizeOverride),
    // The epochs the weights have finished (a checkpoint saved mid-epoch counts the ones before).
    epoch: String(side.epoch - 1),
    weights,
    run: c.runName,
    dataDir: c.dataDir,
  };
}

export function registerEvalCommands(prog: Command): void {
  prog.command("export <checkpoint> <out>")
    .description("write a checkpoint's backbone as safetensors with torchvision's key names (loads into torchvision.models.<arch>() with strict=False, missing only fc.*); the metadata records method, arch, stem, width, image size and epoch, which eval --backbone reads")
    .addOption(new Option("--weights <which>", `online, polyak (Polyak average) or target (the momentum target of ${targetMethods()})`).choices(WEIGHTS).default("online"))
    .action((checkpoint: string, out: string, o: { weights: FeatureWeights }) => {
      refuseOverwrite(out, checkpoint);
      const { tensors, side } = backboneTensors(checkpoint, o.weights);
      const meta = exportMetadata(side, o.weights);
      writeSafetensors(out, tensors, meta);
      console.log(
        `wrote ${tensors.length} ${meta.arch} tensors (${o.weights} weights, epoch ${meta.epoch}, ${meta.imageSize} px${
          side.config.smallStem ? ", small stem" : ""
        }) to ${out}`,
      );
    });

  const evalCmd = prog.command("eval").description("evaluate a frozen backbone on a labelled folder (train/ to fit, test/ to score)");
  const common = (c: Command) =>
    c.option("--checkpoint <path>", "a checkpoint (<run>.last.json / .best.json)")
      .option("--backbone <path>", "or an export (selfsup export): its metadata gives the backbone; torchvision weights need --arch and --image-size-override")
      .option("-a, --arch <name>", "backbone of a --backbone without metadata")
      .option("--small-stem", "a --backbone without metadata uses the 3x3 stem")
      .option("--base-width <n>", "stem channels of a --backbone without metadata (default: 64)", int("--base-width"))
      .addOption(new Option("--weights <which>", `online, polyak or target (${targetMethods()})`).choices(WEIGHTS).default("online"))
      .option("--data-dir <dir>", "labelled train/ and test/ (default: the checkpoint's or export's data folder)")
      .option("--image-size-override <px>", "resize size (default: the checkpoint's or export's)", int("--image-size-override"))
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
  baseWidth?: number;
  weights: FeatureWeights;
  dataDir?: string;
  imageSizeOverride?: number;
  batchSize: number;
  workersPerReplica: number;
  cuda: boolean;
}

const MODEL_FLAGS = [["arch", "--arch"], ["smallStem", "--small-stem"], ["baseWidth", "--base-width"]] as const;

/**
 * The model of a checkpoint, or of an export: from its metadata, else
 * from --arch, --small-stem, --base-width and --image-size-override; and
 * the data folder it was trained on, when known.
 */
function modelConfig(o: EvalOptions): { cfg: Config; dataDir?: string } {
  if (o.checkpoint && o.backbone) throw new ConfigError("give --checkpoint or --backbone, not both");
  if (o.checkpoint) {
    for (const [key, flag] of MODEL_FLAGS) {
      if (o[key] !== undefined) throw new ConfigError(`--checkpoint records its backbone; drop ${flag}`);
    }
    const saved = checkpointOf(o.checkpoint).side.config;
    // A sidecar from before a setting existed holds its default (the native side has none).
    const cfg = { ...(isMethod(saved.method) ? defaultsOf(saved.method) : {}), ...saved } as Config;
    return { cfg, dataDir: cfg.dataDir };
  }
  if (!o.backbone) throw new ConfigError("give --checkpoint <sidecar> or --backbone <export>");
  const meta = readSafetensors(o.backbone).metadata;
  if (meta.format === EXPORT_FORMAT) {
    for (const [key, flag] of MODEL_FLAGS) {
      if (o[key] !== undefined && String(o[key]) !== meta[key]) {
        throw new ConfigError(`${o.backbone}'s metadata says ${key} ${meta[key]}; drop ${flag} ${o[key]}`);
      }
    }
    const cfg = resolve({
      arch: meta.arch,
      baseWidth: Number(meta.baseWidth),
      smallStem: meta.smallStem === "true",
      imageSizeOverride: Number(meta.imageSize),
      dataDir: meta.dataDir,
      numReplicas: 1,
    });
    return { cfg, dataDir: meta.dataDir };
  }
  if (!o.arch || !(o.arch in ARCHS)) {
    throw new ConfigError(`${o.backbone} has no selfsup metadata: give its backbone with --arch (${Object.keys(ARCHS).join(", ")})`);
  }
  if (o.imageSizeOverride === undefined) {
    throw new ConfigError(`${o.backbone} has no selfsup metadata: give the image size it was trained at with --image-size-override`);
  }
  const baseWidth = o.baseWidth ?? 64;
  const cfg = resolve({
    arch: o.arch,
    baseWidth,
    representationSize: featureSize(o.arch, baseWidth),
    smallStem: !!o.smallStem,
    imageSizeOverride: o.imageSizeOverride,
    numReplicas: 1,
  });
  return { cfg };
}

/** Extracts features of both splits (with progress), fits and scores; prints one result line and returns it. */
export async function evaluate(o: EvalOptions, how: Classifier, label: string): Promise<{ top1: number; top5: number }> {
  const model = modelConfig(o);
  const cfg = model.cfg;
  const dataDir = o.dataDir ?? model.dataDir;
  if (!dataDir) throw new ConfigError(`${o.backbone} does not record its data folder: give a labelled one with --data-dir`);
  const layout = dataLayout(dataDir);
  requireLabels(layout, `eval ${label}`);
  const classes = layout.train.classes;
  const cuda = o.cuda !== false && version().cuda;
  const ck = o.checkpoint ? checkpointOf(o.checkpoint) : null;
  const weights = ck ? ck.file : o.backbone!;
  // The checkpoint's online probe keeps its own size (1 output without labels); scoring uses this data's classes.
  const probe = ck ? readShapes(weights).get("model.linear_classifier.weight")?.[0] : undefined;
  using trainer = await Trainer.create({ ...cfg, device: cuda ? "cuda" : "cpu", numClasses: probe ?? classes.length, seed: cfg.seed ?? 0 });
  if (ck) await trainer.loadCheckpoint(ck.file, ck.sha256);
  else await trainer.loadBackbone(weights);
  const size = o.imageSizeOverride ?? cfg.imageSizeOverride;
  console.log(`${label} evaluation of ${o.checkpoint ?? o.backbone} (${cfg.arch}${cfg.smallStem ? ", small stem" : ""}) on ${dataDir} at ${size} px`);
  for (const split of ["train", "test"] as const) {
    using loader = await Loader.create({
      ...loaderFolder(layout[split]!),
      batchSize: o.batchSize,
      imageSize: size,
      augment: false,
      workers: o.workersPerReplica,
      colorJitterStrength: cfg.colorJitterStrength,
      blurProb: cfg.blurProb,
      solarizeProb: cfg.solarizeProb,
    });
    const progress = new Progress(`features of ${split}`, loader.length);
    loader.startEpoch(0);
    let [done, images] = [0, 0];
    for (let b = await loader.next(); b; b = await loader.next()) {
      await trainer.embed(b, split, o.weights);
      images = Math.min(layout[split]!.samples, images + o.batchSize);
      progress.update(++done, images);
    }
    progress.done();
  }
  const fitting = "linear" in how ? `a linear classifier (${how.linear.epochs} epochs)` : `${how.knn.k}-nearest neighbours`;
  console.log(`fitting ${fitting} on ${layout.train.samples} train features, scoring ${layout.test!.samples} test images`);
  const r = await trainer.classify(classes.length, how);
  console.log(`${label} evaluation (${o.weights} weights, ${cfg.arch}): top-1 ${r.top1.toFixed(2)} %, top-5 ${r.top5.toFixed(2)} %`);
  return r;
}
