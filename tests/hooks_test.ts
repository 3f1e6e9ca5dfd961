/**
 * The test and benchmark hooks are in the library built with the cargo
 * feature `testing` (what this suite runs on: scripts/build-testing.sh),
 * not in the release library that ./selfsup, bundles and the container use.
 */
import assert from "node:assert/strict";
import { hook, libraryPath } from "../ffi/lib.ts";
import { type HookName, symbols } from "../ffi/symbols.ts";

const RELEASE = new URL("../native/target/release/libselfsup_native.so", import.meta.url).pathname;
const HOOKS = Object.entries(symbols).filter(([, s]) => "optional" in s && s.optional).map(([name]) => name);
/** Every exported name of a hook starts so (native/src/hooks.rs, bench.rs). */
const PREFIXES = ["selfsup_debug_", "selfsup_trainer_debug_", "selfsup_trainer_bench_"];

/** Which of `needles` occur anywhere in the file (its symbol tables included). */
function occurring(path: string, needles: string[]): string[] {
  const text = new TextDecoder("latin1").decode(Deno.readFileSync(path));
  return needles.filter((n) => text.includes(n));
}

Deno.test("the release library holds no hook, not even by name; the testing library holds them all", () => {
  assert.ok(HOOKS.length >= 12, `the hooks of ffi/symbols.ts: ${HOOKS}`);
  assert.deepEqual(occurring(RELEASE, [...PREFIXES, ...HOOKS]), []);
  // This suite's own library is the testing one: every hook is there.
  assert.notEqual(libraryPath(), RELEASE, "the tests run on the testing library (SELFSUP_NATIVE_LIB)");
  assert.deepEqual(occurring(libraryPath(), HOOKS), HOOKS);
  for (const h of HOOKS) assert.equal(typeof hook(h as HookName), "function", h);
});

Deno.test("the release library loads, and a hook called on it is a one-line error saying how to get one", async () => {
  const root = new URL("..", import.meta.url).href;
  const code = `
    import { hook } from "${root}ffi/lib.ts";
    import { debugRun, version } from "${root}ffi/native.ts";
    console.log(version().libtorch);
    const callable = ${
    JSON.stringify(HOOKS)
  }.filter((h) => { try { return hook(h), true; } catch { return false; } });
    console.log(JSON.stringify(callable));
    await debugRun("loss", {}, "in", "out").catch((e) => console.log(e.message));`;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    env: { SELFSUP_NATIVE_LIB: RELEASE },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const [libtorch, callable, message, ...rest] = new TextDecoder().decode(out.stdout).trim().split("\n");
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  assert.equal(libtorch, "2.11.0");
  assert.deepEqual(JSON.parse(callable), []);
  assert.deepEqual(rest, []);
  assert.match(
    message,
    /^selfsup_debug_loss is a test hook, and .*release\/libselfsup_native\.so was built without them/,
  );
  assert.match(message, /scripts\/build-testing\.sh/);
});
