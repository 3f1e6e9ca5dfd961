/**
 * The run name: one string that keys a run's log folder, weights and
 * checkpoints. Without `--uid` it is short, `<method>-<arch>-<data
 * folder>-<8 hex digits>`, the digits a hash of the settings that make the
 * run; with `--uid` it is built the way the reference's
 * `helpers.utils.get_name` builds it (REFERENCE.md §6): the uid, then
 * abbreviated settings, so a run of selfsup and a run of the reference
 * with the same flags get the same name.
 *
 * ```ts
 * runName({ ...DEFAULTS, dataDir: "/data/cifar10" });                   // "simclr-r50-cifar10-1b5e0c7a"
 * referenceName({ ...referenceDefaults, uid: "", numReplicas: 1 });
 * // "_tmaimfolder_bs4096_e3000_iso224_ar50_rs2048_ns128_hls1024_nt0.1_cjs1_wd1e-06_l0.3_luscos_w10_olmom_nr1"
 * ```
 *
 * --epochs is not part of a run's identity ({@link runIdentity}): raising
 * it continues the same run.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { basename } from "node:path";
import { type Config, foreignTo, isMethod, METHOD_NAMES, ownSettings } from "./config.ts";

/** The longest name: the reference asserts `len(name) < 251`. */
export const MAX_RUN_NAME = 250;

/**
 * The settings that make up the name, in the reference's argparse order
 * (the order of `vars(args)`); a method's own settings (train/config.ts
 * METHODS) are named only in its runs. The reference's blacklist (paths,
 * visdom, workers, distributed rendezvous, debug) is simply not listed.
 */
const REFERENCE_ARGS: (keyof Config)[] = [
  "task",
  "batchSize",
  "epochs",
  "imageSizeOverride",
  "arch",
  "representationSize",
  "nceSize",
  "projectionSize",
  "headLatentSize",
  "nceTemperature",
  "baseDecay",
  "weightInitialization",
  "colorJitterStrength",
  "weightDecay",
  "polyakEma",
  "convertToSyncBn",
  "clip",
  "lr",
  "lrUpdateSchedule",
  "warmup",
  "optimizer",
  "earlyStop",
  "numReplicas",
  "seed",
  "noCuda",
  "half",
];

/**
 * selfsup's own settings that change what is learned, each with the value
 * that leaves it out of the name. They come after the reference's, so a
 * run that keeps them at that value has the reference's name. A new flag
 * that changes results belongs here (its abbreviation must stay unique,
 * which the module checks when it loads).
 */
const SELFSUP_ARGS: [key: keyof Config, omitted: unknown][] = [
  ["smallStem", false],
  ["baseWidth", 64],
  ["byolLoss", "paper"],
  ["blurProb", [0.5, 0.5]],
  ["solarizeProb", [0, 0]],
  // fp16 is named by the reference's `half` (h1), so only bf16 adds `pbf16`.
  ["precision", "fp32"],
];
// The newer methods' own settings (METHODS), always named with their method.
for (const [key] of ownSettings()) {
  if (!REFERENCE_ARGS.includes(key) && !SELFSUP_ARGS.some(([k]) => k === key)) SELFSUP_ARGS.push([key, undefined]);
}

/**
 * The reference's replacements, applied in order to the whole name. Only
 * the ones REFERENCE.md §6 quotes are known; they cover every default.
 */
const REPLACEMENTS: [from: string, to: string][] = [
  ["multi_augment_image_folder", "maimfolder"],
  ["resnet", "r"],
  ["cosine", "cos"],
  ["lars_", "l"],
  ["momentum", "mom"],
];

/** `batchSize` → `bs`: the first letter of each word of the snake_case name. */
export function abbreviation(key: string): string {
  return key.replace(/[A-Z]/g, (m) => "_" + m.toLowerCase()).split("_").map((w) => w[0]).join("");
}

// The reference asserts that no two arguments share an abbreviation.
{
  const seen = new Map<string, string>();
  for (const key of [...REFERENCE_ARGS, ...SELFSUP_ARGS.map(([k]) => k)]) {
    const a = abbreviation(key);
    if (seen.has(a)) throw new Error(`run name: ${key} and ${seen.get(a)} both abbreviate to ${a}`);
    seen.set(a, key);
  }
}

/**
 * A float as Python's `repr` writes it (`1e-06`, `0.1`, `1e+16`): the
 * shortest round-tripping digits, in exponent form below 1e-4 or from 1e16.
 */
export function pythonFloat(x: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? "nan" : x > 0 ? "inf" : "-inf";
  const [mantissa, exp] = x.toExponential().split("e");
  const e = Number(exp);
  if (e >= -4 && e < 16) return String(x);
  return `${mantissa}e${e < 0 ? "-" : "+"}${String(Math.abs(e)).padStart(2, "0")}`;
}

/**
 * One value as the reference writes it, or null when it is dropped: bools
 * become ints, None becomes 0, integral floats become ints, and zero (or
 * empty) values are left out.
 */
function formatValue(v: unknown): string | null {
  if (v === undefined || v === null || v === false || v === 0 || v === "") return null;
  if (v === true) return "1";
  if (typeof v === "number") return formatNumber(v);
  // selfsup's per-view settings (one number per view): `bp1+0.1`, as `-`
  // would read as a sign.
  if (Array.isArray(v)) return v.map((x) => (typeof x === "number" ? formatNumber(x) : String(x))).join("+");
  return String(v);
}

function formatNumber(x: number): string {
  return Number.isInteger(x) ? BigInt(x).toString() : pythonFloat(x);
}

type Named = Readonly<Partial<Config>> | Readonly<Record<string, unknown>>;

/** The run's method; an unknown or missing one names the run as the default method does. */
function methodOf(c: Readonly<Record<string, unknown>>) {
  return isMethod(c.method) ? c.method : METHOD_NAMES[0];
}

/** The run name of `config`: the reference's with a `--uid`, else {@link shortName}. */
export function runName(config: Named): string {
  const c = config as Readonly<Record<string, unknown>>;
  return c.uid ? referenceName(c) : shortName(c);
}

/**
 * What makes two runs the same run: the settings of the reference's name
 * except --epochs, so that a run can be continued with more epochs.
 */
export function runIdentity(config: Named): string {
  return referenceName({ ...config, uid: "", epochs: 0 });
}

/**
 * `<method>-<arch>-<data folder>-<hash>`: readable at a glance, unique by
 * the first 8 hex digits of the SHA-1 of {@link runIdentity}.
 */
export function shortName(config: Named): string {
  const c = config as Readonly<Record<string, unknown>>;
  const arch = String(c.arch ?? "resnet50").replace("wide_resnet", "wr").replace("resnet", "r");
  const data = basename(String(c.dataDir ?? "")).replace(/^\.+/, "").replace(/[^A-Za-z0-9._+=-]/g, "-").slice(0, 32) || "data";
  const hash = createHash("sha1").update(runIdentity(c)).digest("hex").slice(0, 8);
  return `${methodOf(c)}-${arch}-${data}-${hash}`;
}

/**
 * The reference's run name of `config` (keys absent from it are skipped, as zero
 * values are): `<uid>_` followed by `<abbreviation><value>` for each
 * setting, joined with `_`, then the reference's replacements. The batch
 * size is the per-replica one, as the reference divides it in place
 * before naming the run.
 *
 * Two deliberate additions: characters that are unsafe in a file name
 * (anything but letters, digits and `._+=-`) become `-`; a name longer
 * than {@link MAX_RUN_NAME} keeps its first characters and ends in `_`
 * plus the first 8 hex digits of the full name's SHA-1, so it stays
 * unique and the same for the same settings.
 */
export function referenceName(config: Named): string {
  const c = config as Readonly<Record<string, unknown>>;
  const method = methodOf(c);
  const replicas = typeof c.numReplicas === "number" && c.numReplicas > 1 ? c.numReplicas : 1;
  const parts = [String(c.uid ?? "")];
  const args = [...REFERENCE_ARGS.map((k) => [k, undefined] as const), ...SELFSUP_ARGS];
  for (const [key, omitted] of args) {
    if (
      foreignTo(method, key) ||
      (omitted !== undefined && JSON.stringify(c[key]) === JSON.stringify(omitted))
    ) continue;
    let v = c[key];
    if (key === "precision" && v === "fp16") continue;
    if (key === "batchSize" && typeof v === "number") v = Math.floor(v / replicas);
    const text = formatValue(v);
    if (text !== null) parts.push(abbreviation(key) + text);
  }
  let name = parts.join("_");
  for (const [from, to] of REPLACEMENTS) name = name.replaceAll(from, to);
  name = name.replace(/[^A-Za-z0-9._+=-]/g, "-");
  if (name.length <= MAX_RUN_NAME) return name;
  const hash = createHash("sha1").update(name).digest("hex").slice(0, 8);
  return `${name.slice(0, MAX_RUN_NAME - hash.length - 1)}_${hash}`;
}
