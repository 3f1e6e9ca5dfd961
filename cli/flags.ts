/**
 * The training flags, as data: the reference programs' names, types and
 * meanings (REFERENCE.md §1), grouped for `--help`. No defaults are set
 * in commander, so what a user gave is known and method-dependent
 * defaults can be filled in afterwards (cli/config.ts `resolve`).
 *
 * @module
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import type { Settings } from "./config.ts";

type Parse = (v: string) => unknown;

export function int(flag: string): Parse {
  return (v) => {
    if (!/^[-+]?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${flag} needs an integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
}

export function float(flag: string): Parse {
  return (v) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} needs a number, got ${JSON.stringify(v)}`);
    return n;
  };
}

/** "p" (both views) or "p1,p2" (view 1, view 2) → [p1, p2]. */
export function pair(flag: string): Parse {
  return (v) => {
    const parts = v.split(",").map((x) => x.trim());
    const nums = parts.map(Number);
    if (parts.length > 2 || parts.some((x) => x === "") || !nums.every(Number.isFinite)) {
      throw new InvalidArgumentError(`${flag} needs a number or two separated by a comma (view 1,view 2), got ${JSON.stringify(v)}`);
    }
    return nums.length === 1 ? [nums[0], nums[0]] : nums;
  };
}

interface Flag {
  key: keyof Settings;
  flags: string;
  help: string;
  parse?: "int" | "float" | "pair";
}

/** Every training flag, by help group. */
export const FLAGS: Record<string, Flag[]> = {
  "Method": [
    { key: "method", flags: "--method <name>", help: "simclr or byol (default: simclr)" },
  ],
  "Data": [
    { key: "task", flags: "--task <name>", help: "multi_augment_image_folder or dali_multi_augment_image_folder (same pipeline)" },
    { key: "dataDir", flags: "--data-dir <dir>", help: "folder holding train/ and test/ as ImageFolders (default: ./.datasets)" },
    { key: "batchSize", flags: "--batch-size <n>", help: "global batch size, split over replicas (default: 4096)", parse: "int" },
    { key: "imageSizeOverride", flags: "--image-size-override <px>", help: "train crop and test resize size (default: 224)", parse: "int" },
    { key: "colorJitterStrength", flags: "--color-jitter-strength <s>", help: "s in ColorJitter(0.8s, 0.8s, 0.8s, 0.2s) (default: 1)", parse: "float" },
    { key: "blurProb", flags: "--blur-prob <p[,p2]>", help: "Gaussian blur probability, or one per view (default: 0.5)", parse: "pair" },
    { key: "solarizeProb", flags: "--solarize-prob <p[,p2]>", help: "solarisation probability, or one per view; BYOL's paper uses 0,0.2 (default: 0)", parse: "pair" },
    { key: "workersPerReplica", flags: "--workers-per-replica <n>", help: "loader threads per replica (default: 2)", parse: "int" },
    { key: "inMemory", flags: "--in-memory <mode>", help: "keep decoded images in RAM: auto (when a split fits a quarter of RAM), always or never (default: auto)" },
    { key: "strict", flags: "--strict", help: "stop on an unreadable image instead of skipping and reporting it" },
    { key: "download", flags: "--download <n>", help: "accepted for compatibility and ignored (default: 1)", parse: "int" },
  ],
  "Model": [
    { key: "arch", flags: "-a, --arch <name>", help: "resnet18, resnet34, resnet50, resnet101, resnet152, wide_resnet50_2 (default: resnet50)" },
    { key: "smallStem", flags: "--small-stem", help: "3x3 stride-1 stem without max-pool, for ~32 px images" },
    { key: "baseWidth", flags: "--base-width <n>", help: "stem channels; the four stages get n, 2n, 4n, 8n planes: a narrower ResNet for small machines, features shrink alike (default: 64, torchvision's)", parse: "int" },
    { key: "representationSize", flags: "--representation-size <n>", help: "backbone feature width: 512 (resnet18/34) or 2048, times base-width/64 (default: 2048)", parse: "int" },
    { key: "headLatentSize", flags: "--head-latent-size <n>", help: "hidden width of the head (default: simclr 1024, byol 4096)", parse: "int" },
    { key: "nceSize", flags: "--nce-size <n>", help: "SimCLR: projection output width (default: 128)", parse: "int" },
    { key: "nceTemperature", flags: "--nce-temperature <t>", help: "SimCLR: NT-Xent temperature (default: 0.1)", parse: "float" },
    { key: "projectionSize", flags: "--projection-size <n>", help: "BYOL: projector and predictor output width (default: 256)", parse: "int" },
    { key: "baseDecay", flags: "--base-decay <tau>", help: "BYOL: base EMA decay of the target network (default: 0.996)", parse: "float" },
    { key: "byolLoss", flags: "--byol-loss <kind>", help: "BYOL: paper (per-sample 2-2cos) or reference (whole-batch norms) (default: paper)" },
    { key: "weightInitialization", flags: "--weight-initialization <name>", help: "re-initialise conv/linear weights: xavier_uniform, xavier_normal, orthogonal, kaiming_normal, kaiming_uniform (default: torchvision's)" },
    { key: "convertToSyncBn", flags: "--convert-to-sync-bn", help: "synchronise BatchNorm statistics across replicas (a no-op with one replica)" },
  ],
  "Optimisation": [
    { key: "epochs", flags: "--epochs <n>", help: "number of epochs (default: 3000)", parse: "int" },
    { key: "optimizer", flags: "--optimizer <name>", help: "sgd, momentum, adam, adamw, rmsprop, adadelta, or lars_<one of them> (default: lars_momentum)" },
    { key: "lr", flags: "--lr <lr>", help: "base learning rate, x global batch/256 for sgd/momentum (default: simclr 0.3, byol 0.2)", parse: "float" },
    { key: "lrUpdateSchedule", flags: "--lr-update-schedule <s>", help: "cosine or fixed, stepped per iteration (default: cosine)" },
    { key: "warmup", flags: "--warmup <epochs>", help: "linear warmup length in epochs (default: 10)", parse: "int" },
    { key: "weightDecay", flags: "--weight-decay <wd>", help: "L2 on weights with >= 2 dims only (default: 1e-6)", parse: "float" },
    { key: "clip", flags: "--clip <v>", help: "element-wise gradient value clipping, 0 = off (default: 0)", parse: "float" },
    { key: "polyakEma", flags: "--polyak-ema <decay>", help: "keep an EMA of the weights and evaluate with it, 0 = off (default: 0)", parse: "float" },
    { key: "seed", flags: "--seed <n>", help: "seed for weights, shuffling and augmentations (default: none, i.e. 0)", parse: "int" },
    { key: "precision", flags: "--precision <p>", help: "fp32; fp16: autocast with a dynamic loss scale; bf16: autocast, no scale. bf16 on A100/H100, fp16 on V100/T4, fp32 on CPUs (default: fp32)" },
    { key: "half", flags: "--half", help: "the reference's mixed-precision flag: --precision fp16" },
    { key: "noCuda", flags: "--no-cuda", help: "train on the CPU even when a GPU is present" },
    { key: "threads", flags: "--threads <n>", help: "libtorch intra-op threads, 0 = all cores (default: 0)", parse: "int" },
  ],
  "Runs and logging": [
    { key: "uid", flags: "--uid <text>", help: "prefix of the run name (default: none)" },
    { key: "modelDir", flags: "--model-dir <dir>", help: "checkpoints: <run-name>.last.json / .best.json + weights (default: .models)" },
    { key: "logDir", flags: "--log-dir <dir>", help: "TensorBoard events and metrics.jsonl go to <log-dir>/<run-name> (default: ./runs)" },
    { key: "noResume", flags: "--no-resume", help: "start afresh even if this run's last checkpoint exists (it is overwritten)" },
    { key: "checkpointMinutes", flags: "--checkpoint-minutes <m>", help: "also write the last checkpoint every m minutes within an epoch, 0 = only per epoch (default: 30)", parse: "float" },
    { key: "knnMonitor", flags: "--knn-monitor <n>", help: "every n epochs, score frozen features with a 200-NN classifier (train -> test), 0 = off (default: 0)", parse: "int" },
    { key: "earlyStop", flags: "--early-stop", help: "stop after 10 epochs without a better test loss" },
    { key: "visdomUrl", flags: "--visdom-url <url>", help: "also post scalars and image grids to this visdom server, e.g. http://host (default: none)" },
    { key: "visdomPort", flags: "--visdom-port <port>", help: "visdom port (default: the URL's, else 8097)", parse: "int" },
    { key: "debugStep", flags: "--debug-step", help: "one minibatch per pass" },
    { key: "profile", flags: "--profile", help: "profile training steps 3-7 with torch's profiler: a Chrome trace profile.json in the log folder and a table of operators by self time (rank 0)" },
  ],
  "Distributed": [
    { key: "numReplicas", flags: "--num-replicas <n>", help: "number of replicas, one process each (default: WORLD_SIZE or SLURM_NTASKS, else 8 as the reference)", parse: "int" },
    { key: "distributedMaster", flags: "--distributed-master <host>", help: "rank 0's host, tcp:// prefix accepted (default: MASTER_ADDR, or SLURM's first node)" },
    { key: "distributedRank", flags: "--distributed-rank <n>", help: "this process's rank (default: RANK, SLURM_PROCID or SLURM_ARRAY_TASK_ID, else 0)", parse: "int" },
    { key: "distributedPort", flags: "--distributed-port <port>", help: "rendezvous port (default: MASTER_PORT; under SLURM 20000 + job id mod 10000; else 29300)", parse: "int" },
    { key: "distributedTimeout", flags: "--distributed-timeout <s>", help: "a rendezvous or collective that does not complete in s seconds (a rank died or hangs) is an error (default: 600)", parse: "float" },
  ],
};

/** Adds every training flag to `cmd`, grouped in its help. */
export function addTrainingFlags(cmd: Command): Command {
  for (const [group, flags] of Object.entries(FLAGS)) {
    for (const f of flags) {
      const o = new Option(f.flags, f.help).helpGroup(`${group}:`);
      const flag = f.flags.split(/[ ,]+/).find((x) => x.startsWith("--"))!;
      if (f.parse === "int") o.argParser(int(flag));
      if (f.parse === "float") o.argParser(float(flag));
      if (f.parse === "pair") o.argParser(pair(flag));
      cmd.addOption(o);
    }
  }
  cmd.addOption(
    new Option("--print-config", "print the resolved configuration as JSON and exit").helpGroup("Runs and logging:"),
  );
  return cmd;
}

/** The settings given on the command line (commander's parsed options). */
export function givenSettings(opts: Record<string, unknown>): Partial<Settings> {
  const given: Record<string, unknown> = {};
  const keys = new Set(Object.values(FLAGS).flat().map((f) => f.key as string));
  for (const [k, v] of Object.entries(opts)) if (keys.has(k) && v !== undefined) given[k] = v;
  // commander stores --no-X as X = false (and X = true by default)
  if (opts.cuda === false) given.noCuda = true;
  if (opts.resume === false) given.noResume = true;
  return given as Partial<Settings>;
}
