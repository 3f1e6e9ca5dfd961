/**
 * Data sets: the `selfsup data …` commands that write ImageFolders, and
 * the lines a training run prints about its data.
 *
 * ```sh
 * selfsup data fashion-mnist .datasets/fashion-mnist     # from Debian's dataset-fashion-mnist
 * selfsup data fashion-mnist out --from ~/Downloads/fmnist
 * ```
 *
 * @module
 */
import type { Command } from "commander";
import { join } from "node:path";
import { ConfigError } from "./config.ts";
import { type LoaderReport, scanFolder, writeFashionMnist } from "../ffi/native.ts";

/** Where Debian's `dataset-fashion-mnist` package installs the four IDX files. */
export const DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist";

function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Adds `fashion-mnist` (and future converters) under the program's `data` command, creating it if needed. */
export function registerDataCommands(program: Command): void {
  const data = program.commands.find((c) => c.name() === "data") ??
    program.command("data").description("make data sets");
  data.command("fashion-mnist <out-dir>")
    .description("convert Fashion-MNIST's IDX files into an ImageFolder of PNGs (60000 train, 10000 test)")
    .option("--from <dir>", `folder with the four IDX files, plain or .gz (default: ${DEBIAN_FASHION_MNIST})`)
    .action(async (out: string, o: { from?: string }) => {
      const from = o.from ?? DEBIAN_FASHION_MNIST;
      if (!isDir(from)) {
        throw new ConfigError(
          o.from
            ? `--from ${from} is not a folder`
            : `no Fashion-MNIST in ${from}: install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --from <dir>`,
        );
      }
      const n = await writeFashionMnist(from, out);
      const train = scanFolder(join(out, "train"));
      console.log(
        `wrote ${n} images to ${out}: train = ${train.samples} | test = ${
          n - train.samples
        } | classes = ${train.classes.length}`,
      );
      console.log(
        `train on it with: selfsup train --data-dir ${out} --image-size-override 28 --small-stem ...`,
      );
    });
}

/** Images in `<data-dir>/valid` when it exists (the reference loads it and never uses it), else null. */
export function validSamples(dataDir: string): number | null {
  const dir = join(dataDir, "valid");
  return isDir(dir) ? scanFolder(dir).samples : null;
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
