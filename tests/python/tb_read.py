"""Reads a TensorBoard log folder with TensorBoard's own EventAccumulator
and prints what it found as JSON, for tests/logging_tensorboard_test.ts:

    {"scalars": {tag: [[step, value], ...]},
     "images": {tag: [{"step", "width", "height", "decoded": [w, h, mode], "pixels": [[r, g, b], ...]}]},
     "texts": {tag: [[step, text, plugin_name]]}}

`decoded` and `pixels` (row ROW, default 0) come from decoding the PNG
with Pillow, so a malformed image fails here rather than in a browser.

Usage: python tb_read.py LOGDIR [ROW]
"""
import io
import json
import sys

from PIL import Image
from tensorboard.backend.event_processing import event_accumulator


def main(logdir, row):
    acc = event_accumulator.EventAccumulator(
        logdir, size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "images": {}, "texts": {}}
    for tag in tags["scalars"]:
        out["scalars"][tag] = [[e.step, e.value] for e in acc.Scalars(tag)]
    for tag in tags["images"]:
        found = []
        for e in acc.Images(tag):
            im = Image.open(io.BytesIO(e.encoded_image_string))
            im.load()
            pixels = [list(im.getpixel((x, row))) for x in range(im.width)]
            found.append(
                {
                    "step": e.step,
                    "width": e.width,
                    "height": e.height,
                    "decoded": [im.width, im.height, im.mode],
                    "pixels": pixels,
                }
            )
        out["images"][tag] = found
    for tag in tags["tensors"]:
        plugin = acc.SummaryMetadata(tag).plugin_data.plugin_name
        out["texts"][tag] = [
            [e.step, b"".join(e.tensor_proto.string_val).decode("utf-8"), plugin]
            for e in acc.Tensors(tag)
        ]
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
