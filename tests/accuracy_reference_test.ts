/**
 * The accuracy benchmark's PyTorch side (bench/accuracy/reference.py) must
 * build the network selfsup builds: torchvision's ResNet-18 at base width
 * 64, channel counts scaled alike under --base-width (selfsup's own scaling
 * is checked in native/tests/model_test.rs), and each preset of the bench
 * must give both programs the same recipe.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { python, runCli, runPython } from "./helpers.ts";

Deno.test({
  name: "accuracy reference: its ResNet-18 is torchvision's and scales with --base-width like selfsup's",
  ignore: !python,
  fn: async () => {
    const r = JSON.parse(await runPython("accuracy_mirror.py", []));
    assert.equal(r.same_names, true);
    assert.equal(r.same_shapes, true);
    assert.ok(r.max_diff < 1e-5, `outputs differ by ${r.max_diff}`);
    assert.equal(r.scaled, true);
    assert.equal(r.features, 128);
  },
});

/** `bench.py --print-recipe`: each pre-training's settings and both command lines. */
async function printRecipe(
  args: string[],
): Promise<Record<string, { settings: Record<string, unknown>; selfsup?: string[]; pytorch: string[] }>> {
  const bench = join(import.meta.dirname!, "..", "bench", "accuracy", "bench.py");
  const out = await new Deno.Command(python, {
    args: [bench, "--print-recipe", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** A setting (reference.py's flag name) as selfsup's flag and resolved config key call it. */
const selfsupFlag = (k: string) => k === "size" ? "--image-size-override" : `--${k.replaceAll("_", "-")}`;
const camel = (k: string) => selfsupFlag(k).slice(2).replace(/-(.)/g, (_, c: string) => c.toUpperCase());

for (const preset of ["cpu", "gpu"]) {
  Deno.test({
    name: `accuracy bench --preset ${preset}: selfsup and the PyTorch reference are given the same recipe`,
    ignore: !python,
    fn: async () => {
      // The device is named so that the test means the same with or without a GPU here.
      const device = preset === "gpu" ? "cuda" : "cpu";
      const recipes = await printRecipe(["--preset", preset, "--device", device]);
      for (const method of ["simclr", "byol"]) {
        const { settings, selfsup, pytorch } = recipes[method];
        const cli = await runCli(["train", ...selfsup!, "--print-config"]);
        assert.equal(cli.code, 0, cli.stderr);
        const cfg = JSON.parse(cli.stdout);
        const ref = JSON.parse(
          await runPython(join("..", "..", "bench", "accuracy", "reference.py"), [
            "pretrain",
            ...pytorch,
            "--print-args",
          ]),
        );
        for (const [k, v] of Object.entries(settings)) {
          // Given on both command lines, not left to a default that happens to agree today.
          assert.ok(
            pytorch.includes(`--${k.replaceAll("_", "-")}`) || v === false,
            `${method} ${k}: not on reference.py's command line`,
          );
          assert.ok(
            selfsup!.includes(selfsupFlag(k)) || v === false,
            `${method} ${k}: not on selfsup's command line`,
          );
          assert.deepEqual(ref[k], v, `${method} ${k}: reference.py got ${ref[k]}`);
          const want = k === "blur_prob" ? [v, v] : v;
          assert.deepEqual(
            cfg[camel(k)],
            want,
            `${method} ${k}: selfsup got ${JSON.stringify(cfg[camel(k)])}`,
          );
        }
        assert.equal(cfg.representationSize, 8 * (settings.base_width as number));
        assert.deepEqual([cfg.arch, cfg.optimizer, cfg.lrUpdateSchedule, cfg.solarizeProb], [
          "resnet18",
          "momentum",
          "cosine",
          [0, 0],
        ]);
        assert.deepEqual([cfg.noCuda, ref.device], [device === "cpu", device]);
        if (preset === "gpu") {
          // The GPU recipe of docs/ACCURACY.md: full width, small stem, 32 px, bf16.
          assert.deepEqual([cfg.baseWidth, cfg.smallStem, cfg.imageSizeOverride, cfg.precision], [
            64,
            true,
            32,
            "bf16",
          ]);
        }
      }
    },
  });
}
