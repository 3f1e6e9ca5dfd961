/**
 * `selfsup data fashion-mnist`: IDX files the test writes itself (plain
 * and gzipped) become an ImageFolder a loader can read; malformed files
 * are one-line errors naming the file and what is wrong.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { Loader, scanFolder } from "../ffi/native.ts";
import { runCli, tempDir, loaderConfig } from "./helpers.ts";

/** An unsigned-byte IDX file: 00 00 08 ndims, big-endian sizes, data. */
function idx(dims: number[], data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 4 * dims.length + data.length);
  const view = new DataView(out.buffer);
  out.set([0, 0, 8, dims.length]);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  out.set(data, 4 + 4 * dims.length);
  return out;
}

/** n images of 28x28 whose pixels encode their index, labels cycling 0..9. */
function writeSplit(dir: string, prefix: string, n: number, gzip: boolean): void {
  const pixels = new Uint8Array(n * 28 * 28).map((_, p) =>
    Math.floor(p / 784) * 20 + (p % 784 === 0 ? 1 : 0)
  );
  const labels = new Uint8Array(n).map((_, i) => (i * 3) % 10);
  const write = (name: string, bytes: Uint8Array) =>
    Deno.writeFileSync(join(dir, gzip ? `${name}.gz` : name), gzip ? gzipSync(bytes) : bytes);
  write(`${prefix}-images-idx3-ubyte`, idx([n, 28, 28], pixels));
  write(`${prefix}-labels-idx1-ubyte`, idx([n], labels));
}

Deno.test("selfsup data fashion-mnist writes an ImageFolder a loader reads", async () => {
  using dir = tempDir();
  const src = join(dir.path, "idx");
  Deno.mkdirSync(src);
  writeSplit(src, "train", 12, true);
  writeSplit(src, "t10k", 10, false);
  const out = join(dir.path, "fmnist");
  const r = await runCli(["data", "fashion-mnist", out, "--from", src]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^wrote 22 images to .*fmnist: train = 12 \| test = 10 \| classes = 10$/m);
  const train = scanFolder(join(out, "train"));
  assert.deepEqual(train.classes, [
    "0-tshirt-top",
    "1-trouser",
    "2-pullover",
    "3-dress",
    "4-coat",
    "5-sandal",
    "6-shirt",
    "7-sneaker",
    "8-bag",
    "9-ankle-boot",
  ]);
  assert.equal(train.samples, 12);
  // Image 4 has label 2 and keeps its index in its name.
  assert.ok(Deno.statSync(join(out, "train", "2-pullover", "00004.png")).isFile);
  using loader = await Loader.create(loaderConfig({
    dataDir: out,
    split: "test",
    batchSize: 10,
    imageSize: 28,
    augment: false,
  }));
  loader.startEpoch(0);
  const batch = await loader.next();
  assert.ok(batch);
  batch.close();
  assert.deepEqual(loader.report().skipped.count, 0);
  // The output folder is never overwritten.
  const again = await runCli(["data", "fashion-mnist", out, "--from", src]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^selfsup: .*fmnist exists already; choose a new folder\n$/);
});

Deno.test("malformed IDX files are one-line errors naming the file", async () => {
  using dir = tempDir();
  const src = join(dir.path, "idx");
  Deno.mkdirSync(src);
  writeSplit(src, "train", 10, false);
  writeSplit(src, "t10k", 10, false);
  const run = async () => {
    const out = join(dir.path, `out-${crypto.randomUUID()}`);
    const r = await runCli(["data", "fashion-mnist", out, "--from", src]);
    assert.equal(r.code, 1, r.stdout);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.throws(() => Deno.statSync(out), "nothing is written");
    return lines[0];
  };
  const images = join(src, "train-images-idx3-ubyte");
  const good = Deno.readFileSync(images);
  Deno.writeFileSync(images, good.subarray(0, good.length - 10));
  assert.equal(
    await run(),
    `selfsup: ${images}: IDX header says 10x28x28 = 7840 bytes of data, the file has 7830`,
  );
  Deno.writeFileSync(images, new Uint8Array([0x50, 0x4b, 3, 4, ...good.subarray(4)]));
  assert.equal(await run(), `selfsup: ${images}: not an IDX file (the first two bytes must be zero)`);
  Deno.writeFileSync(images, good);
  Deno.writeFileSync(
    join(src, "t10k-labels-idx1-ubyte"),
    idx([10], new Uint8Array([1, 10, 2, 3, 4, 5, 6, 7, 8, 9])),
  );
  assert.match(await run(), /t10k-labels-idx1-ubyte has label 10; Fashion-MNIST labels are 0\.\.9$/);
  Deno.removeSync(join(src, "t10k-labels-idx1-ubyte"));
  assert.match(
    await run(),
    /^selfsup: no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte\.gz in .*idx; Debian's/,
  );
  const missing = await runCli([
    "data",
    "fashion-mnist",
    join(dir.path, "x"),
    "--from",
    join(dir.path, "nope"),
  ]);
  assert.match(missing.stderr, /^selfsup: --from .*nope is not a folder\n$/);
});
