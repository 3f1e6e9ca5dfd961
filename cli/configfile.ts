/**
 * `--config FILE`: settings from a YAML or JSON file whose keys are those
 * `--print-config` prints (camelCase), e.g.
 *
 * ```yaml
 * preset: cifar-resnet18
 * dataDir: /data/cifar10
 * epochs: 200
 * blurProb: [1, 0.1]
 * ```
 *
 * A file sits above a preset and below the flags. A run's saved
 * `runs/<run>/config.json` (or `--print-config`'s output) can be passed
 * back: what it derived (world size, run name, sources, …) and where its
 * process ran (rank, master) are left out, since each process finds its
 * own place. Anything else unknown is a one-line error.
 *
 * @module
 */
import { parse as parseYaml } from "yaml";
import { ConfigError, DEFAULTS, kebab, type Settings } from "./config.ts";
import { closest } from "./flags.ts";

/** Keys a resolved configuration adds to the settings; they are recomputed, never read. */
const DERIVED = [
  "worldSize",
  "rank",
  "localRank",
  "localWorldSize",
  "master",
  "port",
  "launchedBy",
  "batchSizePerReplica",
  "runName",
  "slurmJobId",
  "sources",
];
/** Where a process stands among the replicas: its own, never a file's. */
const PLACEMENT = ["distributedRank", "distributedMaster"];
/** How a saved run was started, which says nothing about the next start. */
const ACTIONS = ["noResume"];
/** Settings whose value may be null. */
const NULLABLE = ["weightInitialization", "visdomUrl", "visdomPort", "seed", "distributedMaster"];
/** Settings that take one number per view (a single number means both). */
const PAIRS = ["blurProb", "solarizeProb"];

/** What a config file holds: settings, and the preset it builds on. */
export interface ConfigFile {
  path: string;
  settings: Partial<Settings>;
  preset?: string;
}

/** Checks one value against the type of its default; returns it in the settings' form. */
function typed(path: string, key: keyof Settings, v: unknown): unknown {
  const want = DEFAULTS[key];
  const bad = (what: string): never => {
    throw new ConfigError(`${path}: ${key} must be ${what}, got ${JSON.stringify(v)} (flag --${kebab(key)})`);
  };
  if (v === null) return NULLABLE.includes(key) ? null : bad(`a ${typeof want}`);
  if (PAIRS.includes(key)) {
    if (typeof v === "number") return [v, v];
    if (Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === "number")) return v;
    return bad("a number or a list of two numbers (view 1, view 2)");
  }
  if (NULLABLE.includes(key)) {
    const numeric = key === "seed" || key === "visdomPort";
    const ok = numeric ? typeof v === "number" : typeof v === "string";
    return ok ? v : bad(`a ${numeric ? "number" : "string"} or null`);
  }
  return typeof v === typeof want ? v : bad(`a ${typeof want}`);
}

/** Reads `path` (.yaml, .yml or .json); every problem is a one-line ConfigError naming the file. */
export function readConfigFile(path: string): ConfigFile {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw new ConfigError(`--config ${path}: ${e instanceof Deno.errors.NotFound ? "no such file" : (e as Error).message}`);
  }
  let data: unknown;
  try {
    data = /\.json$/i.test(path) ? JSON.parse(text) : parseYaml(text);
  } catch (e) {
    throw new ConfigError(`--config ${path}: not valid ${/\.json$/i.test(path) ? "JSON" : "YAML"}: ${(e as Error).message.split("\n")[0]}`);
  }
  if (data === null || typeof data !== "object" || Array.isArray(data)) {
    throw new ConfigError(`--config ${path}: expected a mapping of settings (keys as --print-config prints them)`);
  }
  return settingsOf(data as Record<string, unknown>, path);
}

/**
 * The settings in `record` (a file's contents, or a checkpoint's saved
 * config), checked key by key; `path` names it in errors.
 */
export function settingsOf(record: Record<string, unknown>, path: string): ConfigFile {
  // A run's saved config (it names its run) records where its process stood; a new run finds its own place.
  const saved = "runName" in record;
  const known = Object.keys(DEFAULTS);
  const settings: Record<string, unknown> = {};
  let preset: string | undefined;
  for (const [key, v] of Object.entries(record)) {
    if (key === "preset") {
      if (typeof v !== "string") throw new ConfigError(`${path}: preset must be a preset's name, got ${JSON.stringify(v)}`);
      preset = v;
    } else if (DERIVED.includes(key) || (saved && [...PLACEMENT, ...ACTIONS].includes(key))) {
      continue;
    } else if (PLACEMENT.includes(key)) {
      throw new ConfigError(`${path}: ${key} is per process; pass --${kebab(key)} or let a launcher set it`);
    } else if (known.includes(key)) {
      settings[key] = typed(path, key as keyof Settings, v);
    } else {
      const near = closest(key, known);
      throw new ConfigError(
        `${path}: unknown key ${JSON.stringify(key)}${near ? ` (did you mean ${near}?)` : ""}; keys are those --print-config prints`,
      );
    }
  }
  return { path, settings: settings as Partial<Settings>, preset };
}
