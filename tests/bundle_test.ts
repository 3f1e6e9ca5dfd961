/**
 * The bundle (./selfsup bundle, docs/OFFLINE.md) runs without network:
 * built here, unpacked into an empty folder, run with an empty HOME, no
 * cargo or npm on PATH, npm's registry and every proxy at a closed port,
 * and torch through LIBTORCH alone (scripts/bundle-check.sh --quick; the
 * full check with the demo and the cargo test binaries is the same script
 * without --quick).
 */
import assert from "node:assert/strict";
import { join } from "node:path";

const ROOT = join(import.meta.dirname!, "..");
const hasXz =
  new Deno.Command("sh", { args: ["-c", "command -v xz && command -v git"], stdout: "null" }).outputSync()
    .success;

Deno.test({
  name: "a bundle unpacked elsewhere runs selfsup without network: version and one epoch",
  ignore: !hasXz || !Deno.env.get("LIBTORCH"),
  async fn() {
    const out = await new Deno.Command("sh", {
      args: [join(ROOT, "scripts", "bundle-check.sh"), "--quick"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.match(text, /^\{"cuda":(true|false),.*"libtorch":"2\.11\.0"/m);
    assert.match(text, /train-0\[Epoch 1\]\[3000 samples\]/);
    assert.match(text, /test accuracy of the online linear classifier after epoch 1: top-1 \d+\.\d\d %/);
    assert.doesNotMatch(text, /FAILED|\[setup\] installing|building native/);
  },
});
