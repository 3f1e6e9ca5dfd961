/**
 * The data pipeline against torchvision on the same inputs
 * (tests/python/augment_reference.py): RandomResizedCrop's box
 * distribution, crop + antialiased resize, every photometric op and their
 * composition, and decoding like PIL's convert("RGB"). Python starts
 * slowly (torch), so each test asks it once for all its cases.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { debugRun } from "../ffi/native.ts";
import { python, runPython, tempDir } from "./helpers.ts";

const ignore = python === "";
const ref = async (args: string[]) => JSON.parse(await runPython("augment_reference.py", args));

/** Images PIL writes in awkward modes (CMYK JPEG, 16-bit, palette, a 3200x2400 JPEG), made once for this file. */
let images: Promise<{ dir: string; modes: Record<string, string> }> | undefined;
function testImages() {
  images ??= (async () => {
    const dir = Deno.makeTempDirSync({ prefix: "selfsup-images-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
    return { dir, modes: await ref(["images_make", dir]) };
  })();
  return images;
}

Deno.test({
  name: "RandomResizedCrop boxes follow torchvision's distribution (scale, ratio, position, fallback)",
  ignore,
  async fn() {
    using dir = tempDir();
    const cases = [];
    for (const [w, h] of [[500, 375], [224, 224], [60, 400]]) {
      const out = join(dir.path, `boxes${w}x${h}.safetensors`);
      await debugRun("crop_boxes", { width: w, height: h, count: 20000, seed: w + h }, "", out);
      cases.push([out, w, h]);
    }
    const stats = await ref(["crop_stats", JSON.stringify(cases)]);
    for (const [i, s] of stats.entries()) {
      const what = `${cases[i][1]}x${cases[i][2]}`;
      for (const k of ["area", "log_ratio", "top", "left"]) {
        assert.ok(s[k] < s.critical, `${what} ${k}: KS ${s[k]} >= ${s.critical}`);
      }
      // Scale bounds hold up to rounding, except for the centre-crop fallback after 10 failed
      // tries, which is as frequent as torchvision's.
      assert.ok(
        s.area_max <= 1 && (s.area_min > 0.075 || s.fallback_ours > 0),
        `${what}: ${JSON.stringify(s)}`,
      );
      assert.ok(Math.abs(s.fallback_ours - s.fallback_torchvision) < 0.015, `${what}: ${JSON.stringify(s)}`);
    }
    assert.ok(stats[2].fallback_ours > 0.2, "a 60x400 image often falls back to the centre crop");
  },
});

Deno.test({
  name:
    "crop + resize matches torchvision's resized_crop with antialias (PIL and tensor) within 1 grey level",
  ignore,
  async fn() {
    const { dir } = await testImages();
    const image = join(dir, "large.jpg"); // 3200x2400: strong downscaling
    const boxes = [[0, 0, 2400, 3200], [100, 200, 1500, 1100], [37, 1001, 333, 250], [2000, 3000, 150, 180], [
      5,
      9,
      40,
      30,
    ]];
    const natives: Record<string, string> = {};
    for (const size of [224, 32]) {
      natives[size] = join(dir, `resized${size}.safetensors`);
      await debugRun("crop_resize", { path: image, boxes, size }, "", natives[size]);
    }
    const stats = await ref(["resize_compare", image, JSON.stringify(boxes), JSON.stringify(natives)]);
    assert.equal(Object.keys(stats).length, 2 * 2 * boxes.length);
    for (const [what, e] of Object.entries(stats) as [string, { mean: number; max: number }][]) {
      assert.ok(e.mean <= 1 && e.max <= 8, `${what}: ${JSON.stringify(e)}`);
    }
  },
});

Deno.test({
  name: "photometric draws follow torchvision's: coin rates, jitter factors and op order, blur sigma (KS)",
  ignore,
  async fn() {
    using dir = tempDir();
    for (const strength of [1.0, 0.5]) {
      const out = join(dir.path, `params${strength}.safetensors`);
      await debugRun("augment_params", { count: 20000, seed: 3, strength }, "", out);
      const s = await ref(["param_stats", out, String(strength)]);
      const what = `strength ${strength}: ${JSON.stringify(s)}`;
      for (const k of ["flip", "jitter", "gray", "blur"]) {
        const [ours, theirs] = s[`rate_${k}`];
        assert.ok(Math.abs(ours - theirs) < 0.02, `${k} rate ${ours} vs torchvision ${theirs}; ${what}`);
      }
      for (const k of ["b", "c", "s", "h", "sigma"]) {
        assert.ok(s[`ks_${k}`] < s.critical, `${k}: KS ${s[`ks_${k}`]}; ${what}`);
      }
      assert.deepEqual(s.orders, [24, 24], what);
      assert.ok(s.order_gap < 0.01, `op orders: largest frequency gap ${s.order_gap}; ${what}`);
    }
  },
});

Deno.test({
  name: "each photometric op equals torchvision's functional op for the same factor (<= 1/255)",
  ignore,
  async fn() {
    using dir = tempDir();
    const made = await ref(["ops_make", dir.path]);
    for (const op of made.ops as string[]) {
      const f = (p: string) => join(dir.path, `${p}_${op}.safetensors`);
      await debugRun("augment_op", { op, kernel: made.kernel }, f("in"), f("native"));
    }
    const errors = await ref(["ops_compare", dir.path]);
    assert.deepEqual(Object.keys(errors).sort(), [...made.ops].sort());
    for (const [op, e] of Object.entries(errors)) {
      assert.ok(typeof e === "number" && e <= 1 / 255, `${op}: max |diff| ${e}`);
    }
  },
});

Deno.test({
  name: "the batched photometric pipeline equals torchvision ops composed per image",
  ignore,
  async fn() {
    using dir = tempDir();
    const made = await ref(["apply_make", dir.path]);
    assert.equal(made.kernel, 7);
    const f = (p: string) => join(dir.path, `${p}_apply.safetensors`);
    await debugRun("apply", {}, f("in"), f("native"));
    const e = await ref(["apply_compare", dir.path]);
    assert.ok(e.max <= 1 / 255 && e.mean < 1e-4, JSON.stringify(e));
  },
});

Deno.test({
  name: "decoding equals PIL's convert('RGB'): JPEG, PNG, BMP, WebP, gray, RGBA, palette, CMYK, large",
  ignore,
  async fn() {
    const { dir, modes } = await testImages();
    const natives: Record<string, string> = {};
    for (const name of Object.keys(modes)) {
      natives[join(dir, name)] = join(dir, `${name}.safetensors`);
      await debugRun("decode", { path: join(dir, name) }, "", natives[join(dir, name)]);
    }
    // 16-bit gray: PIL clips every value to 255; selfsup keeps the high byte, i.e. the 8-bit image.
    const gray16 = natives[join(dir, "gray16.png")];
    delete natives[join(dir, "gray16.png")];
    natives[join(dir, "gray.png.again")] = gray16;
    Deno.copyFileSync(join(dir, "gray.png"), join(dir, "gray.png.again"));
    const stats = await ref(["decode_compare", JSON.stringify(natives)]);
    assert.equal(Object.keys(stats).length, Object.keys(modes).length);
    for (
      const [path, s] of Object.entries(stats) as [string, { mean: number; max: number; shape?: unknown }][]
    ) {
      assert.ok(!s.shape, `${path}: shapes ${JSON.stringify(s.shape)}`);
      // Lossless formats are exact; JPEG decoders differ only in IDCT rounding.
      const lossy = path.endsWith(".jpg");
      assert.ok(s.mean <= (lossy ? 1 : 0) && s.max <= (lossy ? 12 : 0), `${path}: ${JSON.stringify(s)}`);
    }
  },
});
