#!/usr/bin/env python3
"""Per-mode spread of class-conditional point samples: for each .npy file given (float32,
N x D, as `onestep sample --class C --out FILE.npy` writes), the root-mean-square deviation
per coordinate from the file's own mean, sqrt(mean over samples and coordinates of
(x - mean)^2). Standard library only. Usage: scripts/mode-spread.py FILE.npy ..."""
import ast
import math
import struct
import sys


def read_npy(path):
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            sys.exit(f"{path}: not a .npy file")
        major = f.read(2)[0]
        header_len = struct.unpack("<H" if major == 1 else "<I", f.read(2 if major == 1 else 4))[0]
        header = ast.literal_eval(f.read(header_len).decode("latin1"))
        if header["descr"] != "<f4" or header["fortran_order"] or len(header["shape"]) != 2:
            sys.exit(f"{path}: expected a C-order float32 N x D array, got {header}")
        n, d = header["shape"]
        values = struct.unpack(f"<{n * d}f", f.read(4 * n * d))
    return [values[i * d:(i + 1) * d] for i in range(n)], d


for path in sys.argv[1:]:
    rows, d = read_npy(path)
    mean = [sum(r[j] for r in rows) / len(rows) for j in range(d)]
    spread = math.sqrt(sum((r[j] - mean[j]) ** 2 for r in rows for j in range(d)) / (len(rows) * d))
    print(f"{path}\t{spread:.4f}")
