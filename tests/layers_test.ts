/**
 * The TypeScript layers stand in one direction: cli/ → train/ → ffi/
 * (→ native). This test reads every module's relative imports (type-only
 * ones included: they tie the modules' meaning just the same) and fails on
 * an import that goes up a layer and on any cycle between modules.
 */
import assert from "node:assert/strict";
import { dirname, join, relative } from "node:path";

const ROOT = new URL("..", import.meta.url).pathname;
const LAYERS = ["cli", "train", "ffi"];

/** Relative import and re-export targets of a module, as repository paths. */
function importsOf(file: string): string[] {
  const text = Deno.readTextFileSync(join(ROOT, file));
  const found: string[] = [];
  // `import … from "x"`, `export … from "x"`, `import "x"`, `import("x")`, across lines.
  const re = /(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}\/[^"']+)["']/g;
  for (const m of text.matchAll(re)) found.push(relative(ROOT, join(ROOT, dirname(file), m[1])));
  return found;
}

function modules(): string[] {
  const out: string[] = [];
  for (const layer of LAYERS) {
    for (const e of Deno.readDirSync(join(ROOT, layer))) {
      if (e.isFile && e.name.endsWith(".ts")) out.push(`${layer}/${e.name}`);
    }
  }
  return out.sort();
}

const graph = new Map(modules().map((m) => [m, importsOf(m)]));

Deno.test("imports only go down the layers: cli/ → train/ → ffi/", () => {
  const rank = (path: string) => LAYERS.indexOf(path.split("/")[0]);
  const upward: string[] = [];
  for (const [from, targets] of graph) {
    for (const to of targets) {
      if (rank(to) >= 0 && rank(to) < rank(from)) upward.push(`${from} → ${to}`);
    }
  }
  assert.deepEqual(upward, []);
});

Deno.test("no import cycles between the modules of cli/, train/ and ffi/", () => {
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (m: string) => {
    state.set(m, "open");
    path.push(m);
    for (const to of graph.get(m) ?? []) {
      if (!graph.has(to)) continue;
      if (state.get(to) === "open") cycles.push([...path.slice(path.indexOf(to)), to].join(" → "));
      else if (!state.has(to)) visit(to);
    }
    path.pop();
    state.set(m, "done");
  };
  for (const m of graph.keys()) if (!state.has(m)) visit(m);
  assert.deepEqual(cycles, []);
});

Deno.test("the import reader sees multi-line and type-only imports", () => {
  // A guard on the reader itself: loop.ts imports checkpoint.ts over several lines.
  assert.deepEqual(graph.get("train/loop.ts")?.includes("train/checkpoint.ts"), true);
  assert.deepEqual(graph.size > 20, true);
});
