#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (one folder per target) under the folder given as
argument: small valid inputs of each format, plus the toy configs of configs/toy."""
import gzip
import json
import pathlib
import struct
import sys
import zlib

root = pathlib.Path(sys.argv[1])
source = pathlib.Path(__file__).resolve().parent.parent


def seed(target, name, data):
    folder = root / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data.encode() if isinstance(data, str) else data)


def safetensors(tensors, metadata=None):
    """tensors: name -> (dtype, shape, raw bytes), laid out in order."""
    header, payload = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(payload), len(payload) + len(raw)]}
        payload += raw
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + payload


def idx(shape, data):
    return bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", s) for s in shape) + data


def png(width, height, colour_type, channels, rows):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    assert all(len(row) == width * channels for row in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


seed("safetensors", "two-tensors.safetensors", safetensors(
    {"weight": ("F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)), "step": ("I64", [], struct.pack("<q", 7))},
    {"format": "pt"}))
seed("safetensors", "empty-tensor.safetensors", safetensors({"bias": ("BF16", [0, 3], b"")}))

for config in sorted((source / "configs" / "toy").glob("*-moons.toml")):
    seed("config", config.name, config.read_bytes())
seed("config", "overrides.toml", "[data]\nname = \"moons\"\n[train]\nsteps = 10\n--\ntrain.batch_size=64\ndata.name=8gaussians\n")

seed("points_csv", "header.csv", "x,y\n0.5,1\n-1,2e3\n# comment\n\n3,4\n5,-6.25\n")
seed("points_csv", "three-d.csv", "1,2,3\n4,5,6\n7,8,9\n")

images = bytes(range(18))
seed("idx", "images-idx3-ubyte", idx([2, 3, 3], images))
seed("idx", "labels-idx1-ubyte", idx([4], bytes([0, 1, 2, 9])))
seed("idx", "images-idx3-ubyte.gz", gzip.compress(idx([2, 3, 3], images)))

seed("png", "grey.png", png(3, 2, 0, 1, [[0, 128, 255], [255, 128, 0]]))
seed("png", "rgb.png", png(2, 2, 2, 3, [[255, 0, 0, 0, 255, 0], [0, 0, 255, 9, 9, 9]]))
seed("png", "rgba.png", png(2, 1, 6, 4, [[255, 0, 0, 128, 0, 0, 0, 0]]))
