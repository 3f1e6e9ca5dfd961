/**
 * Data scanning and symlinks: a folder link out of a class folder (`loop
 * -> ..`) must not add the other classes' images to that class.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { scanFolder, writeDemoDataset } from "../ffi/native.ts";
import { tempDir } from "./helpers.ts";

Deno.test("data symlinks: a `loop -> ..` link in a class folder adds nothing; a link inside the class is followed", async () => {
  using dir = tempDir();
  await writeDemoDataset(join(dir.path, "data"), { trainPerClass: 4, testPerClass: 1 });
  const train = join(dir.path, "data", "train");
  const before = scanFolder(train);
  const first = before.classes[0];
  Deno.symlinkSync("..", join(train, first, "loop"));
  Deno.symlinkSync(join(train, before.classes[1]), join(train, first, "neighbour"));
  assert.deepEqual(scanFolder(train), before, "links out of the class folder are not followed");
  Deno.mkdirSync(join(train, first, "sub"));
  Deno.copyFileSync(join(train, first, [...Deno.readDirSync(join(train, first))].find((e) => e.name.endsWith(".png"))!.name), join(train, first, "sub", "x.png"));
  Deno.symlinkSync("sub", join(train, first, "same"));
  assert.equal(scanFolder(train).samples, before.samples + 2, "sub/x.png, and again through the link inside the class");
});
