/**
 * The training flags, as data: the reference programs' names, types and
 * meanings (REFERENCE.md §1), grouped for `--help`. No defaults are set
 * in commander, so what a user gave is known and method-dependent
 * defaults can be filled in afterwards (cli/config.ts `resolve`).
 *
 * @module
 */
import { type Command, InvalidArgumentError, Option } from "commander";
import { DEFAULTS, type Settings } from "./config.ts";
import { METHOD_NAMES, methodChoices, methodSpec, ownersOf, ownSettings } from "../train/config.ts";
import { PRESETS } from "./presets.ts";

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

/** The closest of `known` to a misspelt `word` (at most 3 edits, ignoring case, `-` and `_`), for "did you mean". */
export function closest(word: string, known: string[]): string | null {
  const norm = (k: string) => k.toLowerCase().replace(/[-_]/g, "");
  let best: [number, string] | null = null;
  for (const k of known) {
    const d = distance(norm(word), norm(k));
    if (d <= 3 && d < norm(word).length && (!best || d < best[0])) best = [d, k];
  }
  return best?.[1] ?? null;
}

/** Levenshtein distance. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
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
  /** The default in words, where it follows other settings, the data or the environment. */
  follows?: string;
}

/** Every training flag, by help group. */
export const FLAGS: Record<string, Flag[]> = {
  "Method": [
    { key: "method", flags: "--method <name>", help: methodChoices() },
    // Each method's own settings, from its METHODS entry.
    ...ownSettings().map(([key, o]) => ({ key, flags: o.flags, help: o.help, parse: o.parse })),
  ],
  "Data": [
    { key: "task", flags: "--task <name>", help: "multi_augment_image_folder or dali_multi_augment_image_folder (same pipeline)" },
    { key: "dataDir", flags: "--data-dir <dir>", help: "train/ and optional test/, each one sub-folder of images per class or a folder of unlabelled images; or a folder of images to train on (docs/DATA.md)" },
    { key: "batchSize", flags: "--batch-size <n>", help: "global batch size, split over replicas", parse: "int", follows: "256; a data set with fewer images per replica gets the largest power of two it fills" },
    { key: "imageSizeOverride", flags: "--image-size-override <px>", help: "train crop and test resize size", parse: "int", follows: "the training images' size, at most 224" },
    { key: "colorJitterStrength", flags: "--color-jitter-strength <s>", help: "s in ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)", parse: "float" },
    { key: "blurProb", flags: "--blur-prob <p[,p2]>", help: "Gaussian blur probability, or one per view", parse: "pair" },
    { key: "solarizeProb", flags: "--solarize-prob <p[,p2]>", help: "solarisation probability, or one per view; BYOL's paper uses 0,0.2", parse: "pair" },
    { key: "workersPerReplica", flags: "--workers-per-replica <n>", help: "loader threads per replica", parse: "int" },
    { key: "inMemory", flags: "--in-memory <mode>", help: "keep decoded images in RAM: auto (when a split fits a quarter of RAM), always or never" },
    { key: "strict", flags: "--strict", help: "stop on an unreadable image instead of skipping and reporting it" },
    { key: "download", flags: "--download <n>", help: "accepted for compatibility and ignored", parse: "int" },
  ],
  "Model": [
    { key: "arch", flags: "-a, --arch <name>", help: "resnet18, resnet34, resnet50, resnet101, resnet152, wide_resnet50_2", follows: "resnet18 for images of 64 px or less, else resnet50" },
    { key: "smallStem", flags: "--small-stem", help: "3x3 stride-1 stem without max-pool, for ~32 px images; --no-small-stem: torchvision's 7x7/2 stem and max-pool", follows: "on for images of 64 px or less" },
    { key: "baseWidth", flags: "--base-width <n>", help: "stem channels; the four stages get n, 2n, 4n, 8n planes: a narrower ResNet for small machines, features shrink alike", parse: "int", follows: "64, torchvision's" },
    { key: "representationSize", flags: "--representation-size <n>", help: "backbone feature width: 512 (resnet18/34) or 2048, times base-width/64", parse: "int", follows: "the backbone's" },
    { key: "headLatentSize", flags: "--head-latent-size <n>", help: "hidden width of the head (BYOL, MoCo v3: of the projector and predictor)", parse: "int" },
    { key: "weightInitialization", flags: "--weight-initialization <name>", help: "re-initialise conv/linear weights: xavier_uniform, xavier_normal, orthogonal, kaiming_normal, kaiming_uniform", follows: "torchvision's" },
    { key: "convertToSyncBn", flags: "--convert-to-sync-bn", help: "synchronise BatchNorm statistics across replicas (a no-op with one replica)" },
  ],
  "Optimisation": [
    { key: "epochs", flags: "--epochs <n>", help: "number of epochs", parse: "int" },
    { key: "optimizer", flags: "--optimizer <name>", help: "sgd, momentum, adam, adamw, rmsprop, adadelta, or lars_<one of them>" },
    { key: "lr", flags: "--lr <lr>", help: "base learning rate, x global batch/256 for sgd/momentum", parse: "float" },
    { key: "lrUpdateSchedule", flags: "--lr-update-schedule <s>", help: "cosine or fixed, stepped per iteration" },
    { key: "warmup", flags: "--warmup <epochs>", help: "linear warmup length in epochs", parse: "int", follows: "10 % of --epochs, at most 10" },
    { key: "weightDecay", flags: "--weight-decay <wd>", help: "L2 on weights with >= 2 dims only", parse: "float" },
    { key: "clip", flags: "--clip <v>", help: "element-wise gradient value clipping, 0 = off", parse: "float" },
    { key: "polyakEma", flags: "--polyak-ema <decay>", help: "keep an EMA of the weights and evaluate with it, 0 = off", parse: "float" },
    { key: "seed", flags: "--seed <n>", help: "seed for weights, shuffling and augmentations", parse: "int", follows: "none, i.e. 0" },
    { key: "precision", flags: "--precision <p>", help: "fp32; fp16: autocast with a dynamic loss scale; bf16: autocast, no scale. bf16 on A100/H100, fp16 on V100/T4, fp32 on CPUs" },
    { key: "half", flags: "--half", help: "the reference's mixed-precision flag: --precision fp16" },
    { key: "noCuda", flags: "--no-cuda", help: "train on the CPU even when a GPU is present" },
    { key: "threads", flags: "--threads <n>", help: "libtorch intra-op threads, 0 = all cores", parse: "int" },
  ],
  "Runs and logging": [
    { key: "uid", flags: "--uid <text>", help: "names the run <uid>_<abbreviated settings>, as the reference", follows: "none: <method>-<arch>-<data folder>-<hash of the settings>" },
    { key: "modelDir", flags: "--model-dir <dir>", help: "checkpoints: <run-name>.last.json / .best.json + weights, and <run-name>.lock while it trains" },
    { key: "logDir", flags: "--log-dir <dir>", help: "TensorBoard events and metrics.jsonl go to <log-dir>/<run-name>" },
    { key: "noResume", flags: "--no-resume", help: "start afresh even if this run's last checkpoint exists (it is overwritten; earlier logs move to previous-<time>/)" },
    { key: "checkpointMinutes", flags: "--checkpoint-minutes <m>", help: "also write the last checkpoint every m minutes within an epoch, 0 = only per epoch", parse: "float" },
    { key: "knnMonitor", flags: "--knn-monitor <n>", help: "every n epochs, score frozen features with a 200-NN classifier (train -> test), 0 = off", parse: "int" },
    { key: "earlyStop", flags: "--early-stop", help: "stop after 10 epochs without a better test loss" },
    { key: "visdomUrl", flags: "--visdom-url <url>", help: "also post scalars and image grids to this visdom server, e.g. http://host" },
    { key: "visdomPort", flags: "--visdom-port <port>", help: "visdom port", parse: "int", follows: "the URL's, else 8097" },
    { key: "debugStep", flags: "--debug-step", help: "one minibatch per pass" },
    { key: "profile", flags: "--profile", help: "profile training steps 3-7 with torch's profiler: a Chrome trace profile.json in the log folder and a table of operators by self time (rank 0)" },
  ],
  "Distributed": [
    { key: "numReplicas", flags: "--num-replicas <n>", help: "number of replicas, one process each", parse: "int", follows: "WORLD_SIZE or SLURM_NTASKS, else one per GPU of this machine (1 on a CPU)" },
    { key: "distributedMaster", flags: "--distributed-master <host>", help: "rank 0's host, tcp:// prefix accepted", follows: "MASTER_ADDR, or SLURM's first node" },
    { key: "distributedRank", flags: "--distributed-rank <n>", help: "this process's rank", parse: "int", follows: "RANK, SLURM_PROCID or SLURM_ARRAY_TASK_ID, else 0" },
    { key: "distributedPort", flags: "--distributed-port <port>", help: "rendezvous port", parse: "int", follows: "MASTER_PORT; under SLURM 20000 + job id mod 10000; else 29300" },
    { key: "distributedTimeout", flags: "--distributed-timeout <s>", help: "a rendezvous or collective that does not complete in s seconds (a rank died or hangs) is an error", parse: "float" },
  ],
};

/** A default as `--help` shows it: `0.5`, `0.5,0` (per view), `none`, `on`. */
function shown(v: unknown): string {
  if (v === null) return "none";
  if (v === true) return "on";
  if (Array.isArray(v)) return v[0] === v[1] ? String(v[0]) : v.join(",");
  return String(v);
}

/** The `(default: …)` of a flag's help: the preset's value, the rule it follows, or the (per-method) default. */
function defaultText(f: Flag, base: Partial<Settings>): string {
  const v = base[f.key];
  if (v !== undefined) return v === false ? "" : ` (default: ${shown(v)})`;
  if (f.follows) return ` (default: ${f.follows})`;
  // A default some method changes is shown for each method it applies to.
  const owners = ownersOf(f.key);
  const per = (owners.length > 0 ? owners : METHOD_NAMES).map((m) => [m, methodSpec(m).defaults[f.key]] as const);
  if (per.some(([, x]) => x !== undefined)) {
    return ` (default: ${per.map(([m, x]) => `${m} ${shown(x ?? DEFAULTS[f.key])}`).join(", ")})`;
  }
  const d = DEFAULTS[f.key];
  return d === false || d === "" ? "" : ` (default: ${shown(d)})`;
}

/**
 * Adds every training flag to `cmd`, grouped in its help, with the
 * defaults of `base` (a preset: the demo's) over the program's.
 */
export function addTrainingFlags(cmd: Command, base: Partial<Settings> = {}): Command {
  const group = "Configuration:";
  cmd.addOption(new Option("--preset <name>", `start from a preset: ${Object.keys(PRESETS).join(", ")} (selfsup presets lists them)`).helpGroup(group));
  cmd.addOption(new Option("--config <file>", "settings from a YAML or JSON file with --print-config's keys, e.g. a run's runs/<run>/config.json; flags override it").helpGroup(group));
  cmd.addOption(new Option("--print-config", "print the resolved configuration as JSON, with the source of each setting, and exit").helpGroup(group));
  for (const [group, flags] of Object.entries(FLAGS)) {
    for (const f of flags) {
      const o = new Option(f.flags, f.help + defaultText(f, base)).helpGroup(`${group}:`);
      const flag = f.flags.split(/[ ,]+/).find((x) => x.startsWith("--"))!;
      if (f.parse === "int") o.argParser(int(flag));
      if (f.parse === "float") o.argParser(float(flag));
      if (f.parse === "pair") o.argParser(pair(flag));
      cmd.addOption(o);
      if (f.key === "smallStem") cmd.addOption(new Option("--no-small-stem").hideHelp());
      if (f.key === "noResume") {
        cmd.addOption(
          new Option("--resume <checkpoint>", "continue from this checkpoint (<run>.last.json or .best.json): its run and settings, flags override them")
            .helpGroup(`${group}:`),
        );
      }
    }
  }
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
