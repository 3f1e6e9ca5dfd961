/**
 * The `selfsup data …` commands that write ImageFolders (how a
 * `--data-dir` is read is train/data.ts).
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
import { isDir } from "../train/data.ts";
import { scanFolder, writeFashionMnist } from "../ffi/native.ts";

/** Where Debian's `dataset-fashion-mnist` package installs the four IDX files. */
export const DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist";

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
