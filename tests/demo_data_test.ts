import assert from "node:assert/strict";
import { join } from "node:path";
import { scanFolder, writeDemoDataset } from "../ffi/native.ts";
import { readTree, tempDir } from "./helpers.ts";

const spec = { trainPerClass: 12, testPerClass: 4 };

Deno.test("the demo data set is deterministic: same seed, same bytes", async () => {
  using dir = tempDir();
  const [a, b, c] = ["a", "b", "c"].map((n) => join(dir.path, n));
  await writeDemoDataset(a, { ...spec, seed: 7 });
  await writeDemoDataset(b, { ...spec, seed: 7 });
  await writeDemoDataset(c, { ...spec, seed: 8 });
  const ta = readTree(a), tb = readTree(b), tc = readTree(c);
  assert.equal(ta.size, 10 * (12 + 4));
  assert.deepEqual([...ta.keys()].sort(), [...tb.keys()].sort());
  for (const [k, v] of ta) assert.deepEqual(v, tb.get(k), `${k} differs between two runs with one seed`);
  const differing = [...ta].filter(([k, v]) => {
    const w = tc.get(k);
    return !w || w.length !== v.length || v.some((x, i) => x !== w[i]);
  });
  assert.ok(differing.length > ta.size / 2, "another seed gives other images");
});

Deno.test("the demo data set is an ImageFolder with 10 sorted classes", async () => {
  using dir = tempDir();
  const root = join(dir.path, "demo");
  await writeDemoDataset(root, spec);
  const train = scanFolder(join(root, "train"));
  const test = scanFolder(join(root, "test"));
  assert.equal(train.classes.length, 10);
  assert.deepEqual(train.classes, [...train.classes].sort());
  assert.deepEqual(test.classes, train.classes);
  assert.equal(train.samples, 120);
  assert.equal(test.samples, 40);
  await assert.rejects(() => writeDemoDataset(root, spec), /exists/);
});
