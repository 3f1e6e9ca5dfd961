/**
 * "2 replicas × batch 8 == 1 replica × batch 16": two real processes on a
 * Gloo process group against one process, same data and seed, for SimCLR
 * and BYOL, with and without --convert-to-sync-bn. The loss of every step
 * and every weight and buffer after the last step agree to 1e-6
 * (relative), because the sampler deals global positions round-robin and
 * each sample's augmentation is keyed by its position.
 *
 * BatchNorm decides what "the same run" is (docs/DISTRIBUTED.md):
 * - with SyncBN, statistics are over all 16 rows, so the reference is a
 *   plain one-process run (SyncBN with one replica is plain BatchNorm);
 * - without it, each replica normalises its own 8 rows, so the reference
 *   is a one-process run whose BatchNorm uses per-replica statistics
 *   (`bnReplicas: 2`); a plain one-process run must then differ.
 *
 * Precision: in float32 the two runs differ only by summation order
 * (~1e-7), and the first loss agrees to 1e-6; but this small ResNet's
 * gradients are so sensitive at initialisation on these images (a one-ulp
 * change of the weights moves some by percents; BatchNorm channels of
 * near-constant activations divide rounding noise by sqrt(eps)) that the
 * weights after one float32 step already differ by more than 1e-6. Training
 * steps are therefore compared in float64 (the trainer's `float64` test
 * setting, same code), where rounding stays near 1e-15.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { writeDemoDataset } from "../ffi/native.ts";
import { readSafetensors } from "../train/safetensors.ts";
import { tempDir } from "./helpers.ts";

const TOLERANCE = 1e-6;
const FLOAT32_TOLERANCE = 1e-5;

interface Run {
  steps: number[][];
  initial: Map<string, Float64Array>;
  weights: Map<string, Float64Array>;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

function worker(spec: Record<string, unknown>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--quiet",
      join(import.meta.dirname!, "dist_worker.ts"),
      JSON.stringify(spec),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function finish(p: Deno.ChildProcess, what: string): Promise<void> {
  const out = await p.output();
  if (!out.success) throw new Error(`${what} failed: ${new TextDecoder().decode(out.stderr)}`);
}

function tensors(path: string): Map<string, Float64Array> {
  const out = new Map<string, Float64Array>();
  for (const [name, t] of readSafetensors(path).tensors) {
    const bytes = t.data.slice().buffer;
    const values = t.dtype === "F64"
      ? new Float64Array(bytes)
      : t.dtype === "F32"
      ? Float64Array.from(new Float32Array(bytes))
      : t.dtype === "I64"
      ? Float64Array.from(new BigInt64Array(bytes), Number)
      : assert.fail(`${path}: ${name} has dtype ${t.dtype}`);
    out.set(name, values);
  }
  return out;
}

function load(out: string): Run {
  const steps = JSON.parse(Deno.readTextFileSync(`${out}.json`)).steps;
  return { steps, initial: tensors(`${out}.init.safetensors`), weights: tensors(`${out}.safetensors`) };
}

/** Runs `world` replicas of batch `16 / world` each; returns rank 0's and rank 1's results. */
async function run(
  dir: string,
  name: string,
  method: string,
  world: number,
  opts: { syncBn: boolean; bnReplicas: number; float64: boolean; steps: number },
): Promise<Run[]> {
  const data = join(dir, "data");
  const port = freePort();
  const procs = Array.from({ length: world }, (_, rank) => {
    const out = join(dir, `${name}-${rank}`);
    return {
      out,
      p: worker({
        data,
        out,
        method,
        worldSize: world,
        rank,
        port,
        batch: 16 / world,
        imageSize: 8,
        ...opts,
      }),
    };
  });
  await Promise.all(procs.map(({ p }, rank) => finish(p, `${name} rank ${rank}`)));
  return procs.map(({ out }) => load(out));
}

/**
 * max|a − b| / max|b|; absolute where b is rounding noise (|b| ≤ 1e-12:
 * e.g. MoCo v3's predictor.1.running_mean, the mean of a bias-free Linear
 * of a BatchNorm's zero-mean output, is 0 in exact arithmetic).
 */
function maxRelative(a: Float64Array, b: Float64Array): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale <= 1e-12 ? diff : diff / scale;
}

function assertSameRun(got: Run, want: Run, what: string): void {
  assert.equal(got.steps.length, want.steps.length);
  for (let s = 0; s < want.steps.length; s++) {
    const [loss, , , , samples] = got.steps[s];
    assert.equal(samples, want.steps[s][4], `${what}: step ${s + 1} covers the same samples`);
    const rel = Math.abs(loss - want.steps[s][0]) / Math.abs(want.steps[s][0]);
    assert.ok(
      rel <= TOLERANCE,
      `${what}: step ${s + 1} loss ${loss} vs ${want.steps[s][0]} (relative ${rel.toExponential(2)})`,
    );
  }
  assert.deepEqual([...got.weights.keys()].sort(), [...want.weights.keys()].sort());
  let worst = 0, worstName = "";
  for (const [name, w] of want.weights) {
    const r = maxRelative(got.weights.get(name)!, w);
    if (r > worst) [worst, worstName] = [r, name];
  }
  assert.ok(worst <= TOLERANCE, `${what}: ${worstName} differs by ${worst.toExponential(2)} (relative)`);
  if (Deno.env.get("SELFSUP_TEST_VERBOSE")) {
    console.log(`${what}: worst weight difference ${worst.toExponential(2)} (${worstName})`);
  }
}

function identical(a: Float64Array, b: Float64Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

function isBnBuffer(name: string): boolean {
  return /(running_mean|running_var|num_batches_tracked)$/.test(name);
}

/** The comparison has teeth: training moved the weights far beyond the tolerance. */
function assertTrained(r: Run, what: string): void {
  const w = "backbone.layer1.0.conv1.weight";
  assert.ok(
    maxRelative(r.weights.get(w)!, r.initial.get(w)!) > 1e3 * TOLERANCE,
    `${what}: ${w} did not move`,
  );
}

for (const method of ["simclr", "byol", "mocov3", "barlowtwins"]) {
  for (const syncBn of [false, true]) {
    const label = `${method}, ${syncBn ? "SyncBN" : "per-replica BatchNorm"}`;
    Deno.test(`2 replicas x batch 8 train exactly as 1 x batch 16: ${label}`, async () => {
      using tmp = tempDir("selfsup-dist-eq-");
      // 20 images: one step of 16 per epoch, so two steps cross an epoch.
      await writeDemoDataset(join(tmp.path, "data"), {
        seed: 3,
        trainPerClass: 2,
        testPerClass: 1,
        size: 32,
      });
      // One process: SyncBN over one replica is plain BatchNorm; without
      // SyncBN, per-replica statistics emulated.
      const bnReplicas = syncBn ? 1 : 2;
      for (const [float64, steps] of [[false, 1], [true, 2]] as const) {
        const what = `${label}, ${float64 ? "float64" : "float32"}, ${steps} step(s)`;
        const [r0, r1] = await run(tmp.path, `two-${float64}`, method, 2, {
          syncBn,
          bnReplicas: 1,
          float64,
          steps,
        });
        const [one] = await run(tmp.path, `one-${float64}`, method, 1, {
          syncBn,
          bnReplicas,
          float64,
          steps,
        });
        if (float64) {
          assertTrained(one, what);
          assertSameRun(r0, one, what);
        } else {
          // float32: the first loss only (a forward at identical weights),
          // where summation order alone moves the loss by about 1e-6.
          const rel = Math.abs(r0.steps[0][0] - one.steps[0][0]) / Math.abs(one.steps[0][0]);
          assert.ok(
            rel <= FLOAT32_TOLERANCE,
            `${what}: loss ${r0.steps[0][0]} vs ${one.steps[0][0]} (relative ${rel.toExponential(2)})`,
          );
        }
        // DDP keeps the replicas identical, bit for bit; without SyncBN each
        // rank's BatchNorm buffers follow its own rows until rank 0's are
        // broadcast at the next forward.
        for (const [name, w] of r0.weights) {
          if (syncBn || !isBnBuffer(name)) {
            assert.ok(identical(r1.weights.get(name)!, w), `${what}: rank 1's ${name}`);
          }
        }
        assert.deepEqual(r1.steps, r0.steps, `${what}: both ranks log the same metrics`);
        if (!syncBn && method === "simclr" && float64) {
          // Per-replica statistics matter: plain BatchNorm over 16 rows differs.
          const [plain] = await run(tmp.path, "plain", method, 1, {
            syncBn: false,
            bnReplicas: 1,
            float64,
            steps: 1,
          });
          const rel = Math.abs(plain.steps[0][0] - one.steps[0][0]) / one.steps[0][0];
          assert.ok(rel > 1e3 * TOLERANCE, `BatchNorm over 16 rows should change the loss (relative ${rel})`);
        }
      }
    });
  }
}
