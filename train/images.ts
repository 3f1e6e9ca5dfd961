/**
 * Image grids of augmented views, as the reference shows them
 * (REFERENCE.md §6): the first min(64, B) views of a batch, resized
 * (nearest) to min(64, H) pixels, each scaled to its own min..max, tiled
 * by `torchvision.utils.make_grid` (8 per row, 2 px of black between),
 * then encoded as PNG for TensorBoard and visdom.
 *
 * @module
 */
import { encode } from "fast-png";

/** A batch of images: uint8, N×C×H×W (C = 3, or 1 for grayscale). */
export interface ImageBatch {
  n: number;
  c: number;
  h: number;
  w: number;
  data: Uint8Array;
}

/** An RGB picture, H×W×3 uint8, row-major. */
export interface Picture {
  width: number;
  height: number;
  rgb: Uint8Array;
}

/** The largest grid the reference draws: 64 images of at most 64×64. */
export const GRID_IMAGES = 64;
export const GRID_SIZE = 64;

/** `F.interpolate(mode="nearest")`: source index floor(i · in/out). */
function nearestIndex(out: number, inp: number): Int32Array {
  const idx = new Int32Array(out);
  const scale = inp / out;
  for (let i = 0; i < out; i++) idx[i] = Math.min(Math.floor(i * scale), inp - 1);
  return idx;
}

/**
 * `make_grid(normalize=True, scale_each=True)` of the first
 * {@link GRID_IMAGES} images, resized to at most {@link GRID_SIZE} px.
 */
export function augmentationGrid(batch: ImageBatch, nrow = 8, padding = 2): Picture {
  const { c, h, w, data } = batch;
  if (c !== 1 && c !== 3) throw new Error(`image grid: expected 1 or 3 channels, got ${c}`);
  if (data.length !== batch.n * c * h * w) {
    throw new Error(`image grid: ${data.length} bytes do not make ${batch.n}x${c}x${h}x${w} images`);
  }
  const n = Math.min(batch.n, GRID_IMAGES);
  const oh = Math.min(GRID_SIZE, h), ow = Math.min(GRID_SIZE, w);
  const rows = nearestIndex(oh, h), cols = nearestIndex(ow, w);
  const xmaps = Math.max(1, Math.min(nrow, n)), ymaps = Math.ceil(n / xmaps);
  const width = xmaps * (ow + padding) + padding, height = ymaps * (oh + padding) + padding;
  const rgb = new Uint8Array(width * height * 3);
  const sampled = new Uint8Array(c * oh * ow);
  for (let k = 0; k < n; k++) {
    const base = k * c * h * w;
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < oh; y++) {
        for (let x = 0; x < ow; x++) {
          sampled[(ch * oh + y) * ow + x] = data[base + (ch * h + rows[y]) * w + cols[x]];
        }
      }
    }
    // Each resized image to its own range, as scale_each does; a flat one stays black.
    let lo = 255, hi = 0;
    for (const v of sampled) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const range = Math.max(hi - lo, 1e-5);
    const top = Math.floor(k / xmaps) * (oh + padding) + padding;
    const left = (k % xmaps) * (ow + padding) + padding;
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        const out = ((top + y) * width + left + x) * 3;
        for (let ch = 0; ch < 3; ch++) {
          const v = sampled[((c === 1 ? 0 : ch) * oh + y) * ow + x];
          // tensorboardX's float to uint8: times 255, truncated.
          rgb[out + ch] = Math.floor(((v - lo) / range) * 255);
        }
      }
    }
  }
  return { width, height, rgb };
}

/** The picture as PNG bytes. */
export function pngOf(p: Picture): Uint8Array {
  return encode({ width: p.width, height: p.height, data: p.rgb, channels: 3, depth: 8 });
}
