/**
 * Named starting points (`--preset NAME`, or `preset: NAME` in a
 * `--config` file): a preset sits above the defaults and below a config
 * file and the flags. Keys of the other method are ignored, so one preset
 * serves SimCLR and BYOL.
 *
 * ```sh
 * selfsup train --preset cifar-resnet18 --data-dir cifar10 --print-config
 * ```
 *
 * @module
 */
import type { Settings } from "./config.ts";

export interface Preset {
  /** One line for `--help`. */
  about: string;
  settings: Partial<Settings>;
}

/**
 * The reference programs' defaults exactly (REFERENCE.md §1): ResNet-50 at
 * 224 px, batch 4096 over 8 replicas, 3000 epochs, warmup 10, LARS.
 */
const REFERENCE: Partial<Settings> = {
  task: "multi_augment_image_folder",
  batchSize: 4096,
  epochs: 3000,
  imageSizeOverride: 224,
  arch: "resnet50",
  smallStem: false,
  baseWidth: 64,
  representationSize: 2048,
  colorJitterStrength: 1.0,
  blurProb: [0.5, 0.5],
  solarizeProb: [0, 0],
  weightDecay: 1e-6,
  lr: 0.3,
  lrUpdateSchedule: "cosine",
  warmup: 10,
  optimizer: "lars_momentum",
  numReplicas: 8,
  workersPerReplica: 2,
  distributedPort: 29300,
};

export const PRESETS: Record<string, Preset> = {
  "cifar-resnet18": {
    about: "CIFAR-style: ResNet-18 with the 3x3 stem at 32 px, batch 512, 800 epochs, jitter 0.5, no blur",
    settings: {
      arch: "resnet18",
      smallStem: true,
      imageSizeOverride: 32,
      batchSize: 512,
      epochs: 800,
      colorJitterStrength: 0.5,
      blurProb: [0, 0],
      nceTemperature: 0.5,
    },
  },
  "imagenet-resnet50": {
    about: "ImageNet: ResNet-50 at 224 px, batch 4096, 100 epochs, LARS (SimCLR's base schedule)",
    settings: {
      arch: "resnet50",
      smallStem: false,
      imageSizeOverride: 224,
      batchSize: 4096,
      epochs: 100,
      optimizer: "lars_momentum",
    },
  },
  "fashion-mnist": {
    about: "Fashion-MNIST at 28 px: the recipe of docs/ACCURACY.md (half-width ResNet-18, SGD-momentum, 15 epochs)",
    settings: {
      arch: "resnet18",
      baseWidth: 32,
      smallStem: false,
      imageSizeOverride: 28,
      batchSize: 256,
      epochs: 15,
      warmup: 1,
      optimizer: "momentum",
      lr: 0.06,
      weightDecay: 5e-4,
      headLatentSize: 512,
      colorJitterStrength: 0.5,
      blurProb: [0, 0],
      nceSize: 128,
      nceTemperature: 0.5,
      projectionSize: 128,
      baseDecay: 0.99,
    },
  },
  "reference-simclr": {
    about: "jramapuram/SimCLR's defaults exactly (ResNet-50, 224 px, batch 4096 over 8 replicas, 3000 epochs)",
    settings: { ...REFERENCE, method: "simclr", headLatentSize: 1024, nceSize: 128, nceTemperature: 0.1 },
  },
  "reference-byol": {
    about: "jramapuram/BYOL's defaults exactly, its whole-batch loss included (--byol-loss reference)",
    settings: {
      ...REFERENCE,
      method: "byol",
      lr: 0.2,
      headLatentSize: 4096,
      projectionSize: 256,
      baseDecay: 0.996,
      byolLoss: "reference",
    },
  },
};

/**
 * `selfsup demo`: a ResNet-18 SimCLR on the generated 32-px shapes, on
 * CPU, in a few minutes. LARS's trust ratio (η = 0.001) moves weights by
 * about lr·η per step, far too little for a few hundred steps, so the demo
 * uses SGD-momentum with a small batch (more steps per second of CPU). Its
 * 32-px images get the 3x3 stem, which keeps layer1 at full resolution:
 * a quarter of the channels (base width 16) keeps a step's cost near that
 * of the full-width ResNet-18 with torchvision's stem.
 */
export const DEMO: Partial<Settings> = {
  dataDir: ".datasets/selfsup-demo",
  arch: "resnet18",
  baseWidth: 16,
  headLatentSize: 512,
  imageSizeOverride: 32,
  batchSize: 128,
  epochs: 12,
  lr: 0.05,
  optimizer: "momentum",
  weightDecay: 5e-4,
  warmup: 1,
  numReplicas: 1,
  workersPerReplica: 2,
  seed: 0,
  noCuda: true,
  uid: "demo",
};
