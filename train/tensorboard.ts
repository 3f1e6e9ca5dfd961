/**
 * A TensorBoard event-file writer: scalars, PNG images and text, the three
 * kinds of summary the reference logs through tensorboardX.
 *
 * An event file is a TFRecord stream of `tensorflow.Event` protobufs: each
 * record is its length (uint64 LE), the masked CRC32C of those 8 bytes,
 * the data, and the masked CRC32C of the data. The messages are encoded by
 * protobufjs from the schema below, and the checksums come from
 * `@aws-crypto/crc32c`.
 *
 * ```ts
 * const w = new EventWriter("runs/my-run");
 * w.scalar("train_loss", 4.2, 1);
 * w.close();
 * ```
 *
 * @module
 */
import protobuf from "protobufjs";
import { crc32c } from "@aws-crypto/crc32c";
import { join } from "node:path";
import { BufferedFile } from "./bufferedfile.ts";

/**
 * The parts of tensorflow/core/util/event.proto and
 * tensorflow/core/framework/{summary,tensor,tensor_shape}.proto that
 * selfsup writes, with their field numbers (enums as int32: same wire type).
 */
const SCHEMA = `
syntax = "proto3";
package tensorflow;
message Event {
  double wall_time = 1;
  int64 step = 2;
  oneof what {
    string file_version = 3;
    Summary summary = 5;
  }
}
message Summary {
  message Image {
    int32 height = 1;
    int32 width = 2;
    int32 colorspace = 3;
    bytes encoded_image_string = 4;
  }
  message Value {
    string tag = 1;
    SummaryMetadata metadata = 9;
    oneof value {
      float simple_value = 2;
      Image image = 4;
      TensorProto tensor = 8;
    }
  }
  repeated Value value = 1;
}
message SummaryMetadata {
  message PluginData {
    string plugin_name = 1;
    bytes content = 2;
  }
  PluginData plugin_data = 1;
}
message TensorShapeProto {
  message Dim { int64 size = 1; }
  repeated Dim dim = 2;
}
message TensorProto {
  int32 dtype = 1;
  TensorShapeProto tensor_shape = 2;
  repeated bytes string_val = 8;
}
`;

const Event = protobuf.parse(SCHEMA).root.lookupType("tensorflow.Event");
const DT_STRING = 7;
const RGB = 3;

/** TFRecord's masked CRC: rotate right by 15, add a constant. */
function maskedCrc(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord around `data`. */
export function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc(data), true);
  return out;
}

let filesOpened = 0;

/** TensorBoard finds event files by this in their name. */
export const EVENT_FILE = /^events\.out\.tfevents\./;

/** Writes summaries to an event file in `logdir`. */
export class EventWriter {
  #file: BufferedFile;

  /**
   * A fresh event file; or, with `resume`, the existing file `resume.name`
   * cut to `resume.length` bytes (a record boundary), continued.
   */
  constructor(logdir: string, resume?: { name: string; length: number }) {
    // TensorBoard finds files by "tfevents" in the name; pid and a counter
    // keep two writers in one folder apart.
    const name = resume?.name ?? `events.out.tfevents.${
      Math.floor(Date.now() / 1000)
    }.${hostname()}.${Deno.pid}.${filesOpened++}`;
    this.#file = new BufferedFile(join(logdir, name), undefined, undefined, resume?.length);
    if (this.#file.length === 0) {
      this.#write({ step: 0, fileVersion: "brain.Event:2" });
      this.#file.flush();
    }
  }

  get path(): string {
    return this.#file.path;
  }

  /** See {@link BufferedFile.length}. */
  get length(): number {
    return this.#file.length;
  }

  /** Flushes to disk; returns the file's length. */
  sync(): number {
    return this.#file.sync();
  }

  scalar(tag: string, value: number, step: number): void {
    this.#summary(step, { tag, simpleValue: value });
  }

  /** A PNG picture (RGB) of `width`×`height`. */
  image(tag: string, png: Uint8Array, width: number, height: number, step: number): void {
    this.#summary(step, { tag, image: { height, width, colorspace: RGB, encodedImageString: png } });
  }

  /** Markdown shown by TensorBoard's text dashboard. */
  text(tag: string, markdown: string, step: number): void {
    this.#summary(step, {
      tag,
      metadata: { pluginData: { pluginName: "text" } },
      tensor: {
        dtype: DT_STRING,
        tensorShape: { dim: [{ size: 1 }] },
        stringVal: [new TextEncoder().encode(markdown)],
      },
    });
  }

  flush(): void {
    this.#file.flush();
  }

  close(): void {
    this.#file.close();
  }

  #summary(step: number, value: Record<string, unknown>): void {
    this.#write({ step, summary: { value: [value] } });
  }

  #write(fields: Record<string, unknown>): void {
    const event = Event.fromObject({ wallTime: Date.now() / 1000, ...fields });
    this.#file.write(tfRecord(Event.encode(event).finish()));
  }
}

function hostname(): string {
  try {
    return Deno.hostname().replace(/[^A-Za-z0-9.-]/g, "-");
  } catch {
    return "localhost";
  }
}
