/**
 * The resolved configuration of a run: one plain object whose keys are
 * the long flag names in camelCase, plus what is derived from them. The
 * command line only produces it; everything downstream takes it as data.
 *
 * @module
 */
import { runName } from "../train/runname.ts";
import {
  type Config,
  ConfigError,
  foreignTo,
  isMethod,
  METHOD_NAMES,
  type Method,
  methodChoices,
  methodSpec,
  ownersOf,
  ownSettings,
  PRECISIONS,
  type Settings,
} from "../train/config.ts";
import { type Env, LaunchError, resolveLaunch } from "./launch.ts";

// The run's settings are data that training reads: their types live in train/config.ts.
export { type Config, ConfigError, type Method, type Precision, PRECISIONS, type Settings } from "../train/config.ts";

/**
 * The defaults: the reference programs' (REFERENCE.md §1, SimCLR's where
 * they differ) except where one machine needs other values
 * (docs/REFERENCE-DEVIATIONS.md, "Defaults"): a batch of 256, one replica
 * per local GPU. Some defaults follow other settings or the data when
 * nothing sets them (see {@link resolveLayers}): the image size, the stem,
 * the backbone, the representation size, the warmup, the batch for tiny
 * data sets. `--preset reference-simclr` / `reference-byol` restore the
 * reference's values.
 */
export const DEFAULTS = {
  method: METHOD_NAMES[0],
  task: "multi_augment_image_folder",
  batchSize: 256,
  epochs: 3000,
  download: 1,
  imageSizeOverride: 224,
  dataDir: "./.datasets",
  logDir: "./runs",
  uid: "",
  arch: "resnet50",
  smallStem: false,
  baseWidth: 64,
  representationSize: 2048,
  headLatentSize: 1024,
  weightInitialization: null,
  modelDir: ".models",
  colorJitterStrength: 1.0,
  blurProb: [0.5, 0.5],
  solarizeProb: [0, 0],
  strict: false,
  inMemory: "auto",
  weightDecay: 1e-6,
  polyakEma: 0,
  convertToSyncBn: false,
  clip: 0,
  lr: 0.3,
  lrUpdateSchedule: "cosine",
  warmup: 10,
  optimizer: "lars_momentum",
  earlyStop: false,
  visdomUrl: null,
  visdomPort: null,
  numReplicas: 1,
  workersPerReplica: 2,
  distributedMaster: null,
  distributedRank: 0,
  distributedPort: 29300,
  distributedTimeout: 600,
  debugStep: false,
  profile: false,
  seed: null,
  noCuda: false,
  half: false,
  precision: "fp32",
  threads: 0,
  noResume: false,
  checkpointMinutes: 30,
  knnMonitor: 0,
  // Each method's own settings: their defaults are in its METHODS entry.
  ...Object.fromEntries(ownSettings().map(([k, o]) => [k, o.default])),
} as Settings;

/** The defaults of `method`: the shared ones, with the method's own over them. */
export function defaultsOf(method: Method): Settings {
  return { ...DEFAULTS, ...methodSpec(method).defaults, method } as Settings;
}

/** Backbones and their pooled feature width. */
export const ARCHS: Record<string, number> = {
  resnet18: 512,
  resnet34: 512,
  resnet50: 2048,
  resnet101: 2048,
  resnet152: 2048,
  wide_resnet50_2: 2048,
};
/** Pooled feature width of `arch` with its channel counts scaled to `baseWidth` (64 = torchvision's). */
export function featureSize(arch: string, baseWidth = 64): number {
  return ARCHS[arch] * baseWidth / 64;
}
export const OPTIMIZER_BASES = ["sgd", "momentum", "adam", "adamw", "rmsprop", "adadelta"];
export const WEIGHT_INITS = ["xavier_uniform", "xavier_normal", "orthogonal", "kaiming_normal", "kaiming_uniform"];
export const TASKS = ["multi_augment_image_folder", "dali_multi_augment_image_folder"];

export function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (m) => "-" + m.toLowerCase());
}

function fail(msg: string): never {
  throw new ConfigError(msg);
}

/** One source of settings: the flags, a `--config` file or a preset. */
export interface Layer {
  kind: "flag" | "file" | "preset";
  /** How `--print-config`'s `sources` names it: `flag`, `config run.yaml`, `preset cifar-resnet18`. */
  source: string;
  settings: Partial<Settings>;
}

/** What the machine and the data say, for the defaults that follow them. */
export interface Facts {
  /** GPUs libtorch sees (0 on a CPU). */
  gpus?: number;
  /** The training split: its image count and a typical image's width and height. */
  data?: { samples: number; imageSize: [number, number] | null };
}

/** Where each setting that is not a plain default came from. */
export type Sources = Partial<Record<keyof Settings, string>>;

/** Images of at most this many pixels a side get the 3x3 stem and ResNet-18 by default. */
export const SMALL_IMAGES = 64;
/** The largest default image size: larger images are cropped to this (the reference's size). */
export const DEFAULT_MAX_IMAGE = 224;

/**
 * The configuration from explicitly given settings (`given`, the flags)
 * over a base (a preset): see {@link resolveLayers}.
 */
export function resolve(given: Partial<Settings>, base: Partial<Settings> = {}, env: Env = {}, facts: Facts = {}): Config {
  const layers: Layer[] = [{ kind: "flag", source: "flag", settings: given }, { kind: "preset", source: "preset", settings: base }];
  return resolveLayers(layers, env, facts).config;
}

/**
 * The configuration from `layers`, highest precedence first (flags, then
 * a config file, then a preset), over the defaults; and where each
 * setting came from. A flag of the other method is an error (in a file,
 * when it differs from the default; a preset's are ignored). Settings that
 * nothing gave follow the others, the data and the machine (`facts`);
 * then every check runs. Rank, world size, master and port come from the
 * flags, else from `env` (torchrun's or SLURM's variables; the CLI passes
 * the process's), else the lower layers, else one replica per GPU.
 */
export function resolveLayers(layers: Layer[], env: Env = {}, facts: Facts = {}): { config: Config; sources: Sources } {
  const flags = layers.find((l) => l.kind === "flag")?.settings ?? {};
  const sources: Sources = {};
  const pick = <K extends keyof Settings>(key: K): Settings[K] | undefined => {
    const layer = layers.find((l) => l.settings[key] !== undefined);
    if (!layer) return undefined;
    sources[key] = layer.source;
    return layer.settings[key] as Settings[K];
  };
  const method: Method | string = pick("method") ?? DEFAULTS.method;
  if (!isMethod(method)) fail(`--method must be ${methodChoices()}, got ${method}`);
  for (const l of layers) {
    for (const key of Object.keys(l.settings) as (keyof Settings)[]) {
      const v = l.settings[key];
      if (!foreignTo(method, key) || v === undefined || l.kind === "preset" || (l.kind === "file" && v === DEFAULTS[key])) continue;
      const name = l.kind === "flag" ? `--${kebab(key)}` : `${l.source}: ${key}`;
      fail(`${name} belongs to --method ${ownersOf(key).join(" or ")}, not ${method}`);
    }
  }
  const s = defaultsOf(method);
  const set = s as unknown as Record<string, unknown>;
  for (const key of Object.keys(DEFAULTS) as (keyof Settings)[]) {
    if (key === "method" || foreignTo(method, key)) continue;
    const v = pick(key);
    if (v !== undefined) set[key] = v;
  }
  // Lower layers act as the launcher's base: the environment overrides them, not the flags.
  const lower = Object.assign({}, ...layers.filter((l) => l.kind !== "flag").map((l) => l.settings).reverse());
  const gpus = facts.gpus ?? 0;
  let launch;
  try {
    launch = resolveLaunch(flags, env, lower, { numReplicas: Math.max(1, gpus), distributedPort: DEFAULTS.distributedPort });
  } catch (e) {
    throw e instanceof LaunchError ? new ConfigError(e.message) : e;
  }
  if (flags.numReplicas === undefined) {
    const launcher = ["torchrun", "slurm", "slurm-array"].includes(launch.launchedBy) ? launch.launchedBy : undefined;
    sources.numReplicas = launcher ?? sources.numReplicas ?? `one per GPU of this machine (${gpus})`;
  }
  Object.assign(s, {
    numReplicas: launch.worldSize,
    distributedRank: launch.rank,
    distributedMaster: launch.master,
    distributedPort: launch.port,
  });
  // A preset's warm-up that leaves no room in the --epochs given above it
  // (`demo --epochs 1`) gives way to the default that follows --epochs; a
  // warm-up given as a flag or in a file stays a contradiction (checked below).
  if (layers.find((l) => l.settings.warmup !== undefined)?.kind === "preset" && s.warmup >= s.epochs) delete sources.warmup;
  followingDefaults(s, sources, facts);
  // --half is the reference's spelling of --precision fp16.
  if (s.half && s.precision !== "fp16") {
    if (sources.precision !== undefined) fail(`--half means --precision fp16; it contradicts --precision ${s.precision}`);
    s.precision = "fp16";
  }
  s.half = s.precision === "fp16";
  validate(s);
  const config: Config = {
    ...s,
    worldSize: launch.worldSize,
    rank: launch.rank,
    localRank: launch.localRank,
    localWorldSize: launch.localWorldSize,
    master: launch.master,
    port: launch.port,
    launchedBy: launch.launchedBy,
    batchSizePerReplica: s.batchSize / s.numReplicas,
    runName: runName(s),
  };
  return { config, sources };
}

/**
 * The defaults that follow other settings, the data or the machine, for
 * each setting nothing gave (`sources` says which were given; the
 * reason for each filled one is added there).
 */
function followingDefaults(s: Settings, sources: Sources, facts: Facts): void {
  const fill = <K extends keyof Settings>(key: K, value: Settings[K], why: string) => {
    if (sources[key] !== undefined) return;
    s[key] = value;
    sources[key] = why;
  };
  const size = facts.data?.imageSize;
  if (size) {
    fill("imageSizeOverride", Math.min(DEFAULT_MAX_IMAGE, ...size), `the data's images (${size[0]}x${size[1]})`);
  }
  if (s.imageSizeOverride <= SMALL_IMAGES) {
    const why = `images of ${SMALL_IMAGES} px or less`;
    fill("smallStem", true, why);
    fill("arch", "resnet18", why);
  }
  if (s.arch in ARCHS && Number.isInteger(s.baseWidth) && s.baseWidth > 0) {
    const width = s.baseWidth === 64 ? "" : ` at --base-width ${s.baseWidth}`;
    fill("representationSize", featureSize(s.arch, s.baseWidth), `${s.arch}'s features${width}`);
  }
  if (Number.isInteger(s.epochs) && s.epochs > 0) {
    fill("warmup", Math.min(DEFAULTS.warmup, Math.floor(s.epochs / 10)), `10 % of --epochs ${s.epochs}, at most ${DEFAULTS.warmup}`);
  }
  const replicas = s.numReplicas;
  if (sources.batchSize === undefined && Number.isInteger(replicas) && replicas > 0) {
    // A whole batch per replica; tiny data sets get the largest power of two that fits.
    let perReplica = Math.floor(DEFAULTS.batchSize / replicas);
    const samples = facts.data?.samples;
    const have = samples === undefined ? Infinity : Math.ceil(samples / replicas);
    if (have < 2) fail(`${samples} training image${samples === 1 ? "" : "s"} for ${replicas} replica${replicas === 1 ? "" : "s"}: a batch needs at least 2 per replica`);
    if (have < perReplica) perReplica = 2 ** Math.floor(Math.log2(Math.max(1, have)));
    if (perReplica * replicas !== DEFAULTS.batchSize) {
      fill("batchSize", perReplica * replicas, have < Infinity && have < DEFAULTS.batchSize / replicas
        ? `the largest power of two per replica that ${samples} training images fill`
        : `${DEFAULTS.batchSize} split evenly over ${replicas} replicas`);
    }
  }
}

function positiveInt(s: Settings, key: keyof Settings): void {
  const v = s[key] as number;
  if (!Number.isInteger(v) || v < 1) fail(`--${kebab(key)} must be a positive integer, got ${v}`);
}

/** Checks ranges and combinations; throws a ConfigError naming the flag. */
export function validate(s: Settings): void {
  for (const k of ["batchSize", "epochs", "imageSizeOverride", "numReplicas", "headLatentSize"] as const) {
    positiveInt(s, k);
  }
  if (!TASKS.includes(s.task)) fail(`unknown --task ${s.task}; choose ${TASKS.join(" or ")}`);
  if (!(s.arch in ARCHS)) fail(`unknown --arch ${s.arch}; choose one of ${Object.keys(ARCHS).join(", ")}`);
  positiveInt(s, "baseWidth");
  const features = featureSize(s.arch, s.baseWidth);
  if (s.representationSize !== features) {
    const arch = s.baseWidth === 64 ? s.arch : `${s.arch} with --base-width ${s.baseWidth}`;
    fail(`--representation-size ${s.representationSize} does not match ${arch}'s ${features} features; use --representation-size ${features}`);
  }
  const opt = s.optimizer.trim().toLowerCase();
  const optBase = opt.includes("lars") ? opt.split("_").at(-1)! : opt;
  if (!OPTIMIZER_BASES.includes(optBase)) {
    fail(`unknown --optimizer ${s.optimizer}; choose ${OPTIMIZER_BASES.join(", ")}, or lars_<one of them>`);
  }
  if (s.weightInitialization !== null && !WEIGHT_INITS.includes(s.weightInitialization)) {
    fail(`unknown --weight-initialization ${s.weightInitialization}; choose one of ${WEIGHT_INITS.join(", ")}`);
  }
  // A method's own settings: the checks of its METHODS entry (another method's are not read).
  for (const [k, o] of ownSettings()) {
    const why = !foreignTo(s.method, k) && o.check?.(s[k] as never);
    if (why) fail(`--${kebab(k)} ${why}`);
  }
  if (!(s.polyakEma >= 0 && s.polyakEma < 1)) fail(`--polyak-ema must be in [0, 1), got ${s.polyakEma}`);
  if (!(s.lr > 0)) fail(`--lr must be > 0, got ${s.lr}`);
  if (!(s.clip >= 0)) fail(`--clip must be >= 0, got ${s.clip}`);
  if (!(s.weightDecay >= 0)) fail(`--weight-decay must be >= 0, got ${s.weightDecay}`);
  if (!(s.colorJitterStrength >= 0 && s.colorJitterStrength <= 2.5)) {
    fail(`--color-jitter-strength must be in [0, 2.5] (torchvision's hue 0.2s must stay within 0.5), got ${s.colorJitterStrength}`);
  }
  for (const k of ["blurProb", "solarizeProb"] as const) {
    if (!s[k].every((p) => p >= 0 && p <= 1)) fail(`--${kebab(k)} values must be in [0, 1], got ${s[k].join(",")}`);
  }
  if (!["auto", "always", "never"].includes(s.inMemory)) fail(`--in-memory must be auto, always or never, got ${s.inMemory}`);
  if (s.lrUpdateSchedule !== "cosine" && s.lrUpdateSchedule !== "fixed") {
    fail(`--lr-update-schedule must be cosine or fixed, got ${s.lrUpdateSchedule} (the reference's "step" is not implemented there either)`);
  }
  if (!Number.isInteger(s.warmup) || s.warmup < 0) fail(`--warmup must be an integer >= 0, got ${s.warmup}`);
  if (s.warmup >= s.epochs) fail(`--warmup ${s.warmup} must be shorter than --epochs ${s.epochs}`);
  if (!Number.isInteger(s.workersPerReplica) || s.workersPerReplica < 1) {
    fail(`--workers-per-replica must be a positive integer, got ${s.workersPerReplica}`);
  }
  if (s.batchSize % s.numReplicas !== 0) {
    fail(`--batch-size ${s.batchSize} is not divisible by --num-replicas ${s.numReplicas}`);
  }
  if (!Number.isInteger(s.distributedRank) || s.distributedRank < 0 || s.distributedRank >= s.numReplicas) {
    fail(`--distributed-rank ${s.distributedRank} must be in [0, --num-replicas ${s.numReplicas})`);
  }
  if (!Number.isInteger(s.distributedPort) || s.distributedPort < 1 || s.distributedPort > 65535) {
    fail(`--distributed-port must be a port number, got ${s.distributedPort}`);
  }
  if (!(s.distributedTimeout > 0)) fail(`--distributed-timeout must be > 0 seconds, got ${s.distributedTimeout}`);
  if (s.seed !== null && (!Number.isInteger(s.seed) || s.seed < 0)) fail(`--seed must be an integer >= 0, got ${s.seed}`);
  if (!Number.isInteger(s.knnMonitor) || s.knnMonitor < 0) fail(`--knn-monitor must be an integer >= 0, got ${s.knnMonitor}`);
  if (!(s.checkpointMinutes >= 0)) fail(`--checkpoint-minutes must be >= 0, got ${s.checkpointMinutes}`);
  if (!PRECISIONS.includes(s.precision)) fail(`--precision must be fp32, fp16 or bf16, got ${s.precision}`);
}

/** What this build cannot train yet; checked when training starts, not for --print-config. */
export function checkTrainable(c: Config): void {
  if (c.worldSize > 1 && c.master === null) {
    fail(
      `--num-replicas ${c.worldSize} needs --distributed-master (rank 0's host) and a rank per process: start the replicas with ` +
        `\`selfsup launch --nproc ${c.worldSize} train …\`, torchrun or srun (slurm/run.sh), or pass --num-replicas 1`,
    );
  }
}
