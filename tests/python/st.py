"""Minimal safetensors reader/writer for float32/int64 tensors, so the
parity scripts need only torch (a reused torch install may lack the
`safetensors` package). Format: u64 header length, JSON header, raw data."""
import json
import struct

import torch

_DTYPES = {"F32": torch.float32, "I64": torch.int64, "F64": torch.float64}
_NAMES = {v: k for k, v in _DTYPES.items()}


def load(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        lo, hi = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[lo:hi]), dtype=_DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).clone()
    return out


def save(tensors, path):
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(chunks))


def report(ref_path, native_path, ignore=()):
    """JSON-ready {name: {rel, abs, scale}} for tensors in both files, plus
    names found in only one: rel = max|a-b| / max|b| (abs when b is 0).
    Names starting with a prefix in `ignore` are left out."""
    keep = lambda d: {k: v for k, v in d.items() if not k.startswith(tuple(ignore))}
    ref, nat = keep(load(ref_path)), keep(load(native_path))
    out = {}
    for k in sorted(set(ref) & set(nat)):
        a, b = nat[k].double(), ref[k].double()
        scale = b.abs().max().item() if b.numel() else 0.0
        diff = (a - b).abs().max().item() if b.numel() else 0.0
        out[k] = {"rel": diff / scale if scale > 0 else diff, "abs": diff, "scale": scale}
    return {"errors": out, "unmatched": sorted(set(ref) ^ set(nat))}
