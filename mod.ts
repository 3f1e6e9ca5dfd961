/**
 * selfsup as a library: the native handles, the configuration and the
 * training loop, for programs that compose their own.
 *
 * ```ts
 * import { Loader, Trainer } from "./mod.ts";
 * ```
 *
 * @module
 */
export { Batch, Loader, scanFolder, Trainer, version, writeDemoDataset } from "./ffi/native.ts";
export type { DistributedConfig, LoaderConfig, StepMetrics, TrainerConfig, VersionInfo } from "./ffi/native.ts";
export { libraryPath, NativeError } from "./ffi/lib.ts";
export { type Config, DEFAULTS, validate } from "./cli/config.ts";
export { expandNodelist, type Launch, launchLocal, resolveLaunch } from "./cli/launch.ts";
export { lrAt, type Schedule, scaledLr } from "./train/schedule.ts";
export { Meter, train } from "./train/loop.ts";
