/**
 * How a `--data-dir` is read (docs/DATA.md): labelled or not, with or
 * without a test split, and the lines a training run prints about its data.
 *
 * @module
 */
import { basename, dirname, join, resolve as absolute } from "node:path";
import { ConfigError } from "./config.ts";
import { type FolderScan, type LoaderReport, scanFolder } from "../ffi/native.ts";

/** `path` is a folder (false when it does not exist). */
export function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** One split: its folder and what a scan found there. */
export interface Split extends FolderScan {
  folder: string;
}

/**
 * A data set as selfsup reads it (docs/DATA.md): `train/` with an
 * optional `test/` (and `valid/`, counted and unused, as the reference),
 * or, without `train/`, the folder itself as the training images. Each
 * split holds one sub-folder of images per class, or unlabelled images.
 */
export interface DataLayout {
  dir: string;
  train: Split;
  test: Split | null;
  /** Images in `valid/`, or null without one. */
  valid: number | null;
  /** Training labels exist (two classes or more): the online probe learns, accuracy means something. */
  labelled: boolean;
  /** ... and the test split has the same classes: test accuracy is reported. */
  testLabelled: boolean;
}

function split(folder: string): Split {
  return { folder, ...scanFolder(folder) };
}

/** Reads the layout of `dir`; a missing or unusable folder is a one-line ConfigError. */
export function dataLayout(dir: string): DataLayout {
  if (!isDir(dir)) throw new ConfigError(`--data-dir ${dir}: no such folder`);
  const sub = (name: string) => isDir(join(dir, name)) ? join(dir, name) : null;
  const [trainDir, testDir, validDir] = [sub("train"), sub("test"), sub("valid")];
  if (!trainDir && testDir) throw new ConfigError(`--data-dir ${dir} has test/ but no train/: put the training images in ${join(dir, "train")}`);
  const train = split(trainDir ?? dir);
  const test = testDir ? split(testDir) : null;
  const labelled = train.classes.length >= 2;
  const testLabelled = labelled && test !== null && JSON.stringify(test.classes) === JSON.stringify(train.classes);
  return { dir, train, test, valid: validDir ? scanFolder(validDir).samples : null, labelled, testLabelled };
}

/** A split's folder as a loader takes it (a data folder and a split name inside it). */
export function loaderFolder(s: Split): { dataDir: string; split: string } {
  const folder = absolute(s.folder);
  return { dataDir: dirname(folder), split: basename(folder) };
}

/** The first lines a run prints about its data: what it found and, without labels, what that turns off. */
export function layoutLines(l: DataLayout): string[] {
  const what = (s: Split) => s.classes.length >= 2 ? `${s.samples}` : `${s.samples} unlabelled`;
  const parts = [`train = ${what(l.train)}`, `test = ${l.test ? what(l.test) : "none (no test/ folder)"}`];
  if (l.valid !== null) parts.push(`valid = ${l.valid} (unused)`);
  parts.push(`classes = ${l.labelled ? l.train.classes.length : "none"}`);
  const lines = [parts.join(" | ")];
  if (l.train.folder === l.dir) lines.push(`no train/ folder in ${l.dir}: its images are the training set`);
  if (!l.labelled) {
    const why = l.train.classes.length === 1 ? "one class folder" : "no class folders";
    lines.push(`no labels (${why}): the online linear probe and accuracies are off; kNN and linear eval need a labelled folder`);
  } else if (l.test && !l.testLabelled) {
    lines.push(`test/ does not have train/'s classes: test accuracy is off`);
  }
  return lines;
}

/** Stops with one line unless `l` has labelled train and test splits, which `what` needs. */
export function requireLabels(l: DataLayout, what: string): void {
  if (l.testLabelled) return;
  const missing = !l.labelled ? `${l.train.folder} has no class folders` : !l.test ? `${l.dir} has no test/ folder` : `test/ does not have train/'s classes`;
  throw new ConfigError(`${what} needs labelled train/ and test/ folders (one sub-folder of images per class): ${missing}`);
}

/** The run's line about a pass's unreadable images, or null when there were none. */
export function skippedLine(split: string, epoch: number, r: LoaderReport): string | null {
  const s = r.skipped;
  if (s.count === 0) return null;
  const more = s.count > s.examples.length ? `, and ${s.count - s.examples.length} more` : "";
  return `${split}: skipped ${s.count} unreadable image${s.count === 1 ? "" : "s"} in epoch ${epoch} ` +
    `(--strict stops instead): ${s.examples.join("; ")}${more}`;
}

/** Which splits keep their decoded images in memory, or null when none does. */
export function inMemoryLine(mode: string, reports: Record<string, LoaderReport>): string | null {
  const kept = Object.entries(reports).filter(([, r]) => r.inMemory).map(([split]) => split);
  return kept.length
    ? `decoded images are kept in memory after first use: ${kept.join(", ")} (--in-memory ${mode})`
    : null;
}
