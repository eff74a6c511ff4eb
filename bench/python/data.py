"""The Python twin's data: onestep's checkerboard stream (src/onestep/data/toy2d.cpp) and
Fashion-MNIST from Debian's IDX files (image_datasets.cpp: pixels scaled to [-1, 1], batches
drawn with replacement, labels as classes). train_batch(n, gen) returns (x, y or None)."""
import gzip
import os

import numpy as np
import torch


class Checkerboard:
    shape, num_classes = (2,), 0

    def train_batch(self, n, gen):
        x1 = torch.rand(n, generator=gen) * 4 - 2
        row = torch.randint(0, 2, (n,), generator=gen).float() * 2 - 2 + torch.remainder(torch.floor(x1), 2)
        below_one = float(np.nextafter(np.float32(1), np.float32(0)))
        x2 = torch.minimum(row + torch.rand(n, generator=gen), row + below_one)
        return torch.stack([x1, x2], 1), None


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    dims = raw[3]
    sizes = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.from_numpy(np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(sizes).copy())


class FashionMnist:
    shape, num_classes = (1, 28, 28), 10

    def __init__(self, folder, hflip):
        if hflip:
            raise ValueError("bench/python: data.hflip is not mirrored")

        def find(stem):
            for name in (stem, stem + ".gz"):
                if os.path.exists(os.path.join(folder, name)):
                    return os.path.join(folder, name)
            raise ValueError(f"bench/python: {stem} not found in {folder}")
        self.images = read_idx(find("train-images-idx3-ubyte")).unsqueeze(1)
        self.labels = read_idx(find("train-labels-idx1-ubyte")).long()

    def train_batch(self, n, gen):
        rows = torch.randint(0, self.images.size(0), (n,), generator=gen)
        return self.images.index_select(0, rows).float().div_(127.5).sub_(1.0), self.labels.index_select(0, rows)


def make_dataset(cfg):
    name = cfg["name"]
    if name == "checkerboard":
        return Checkerboard()
    if name == "fashion-mnist":
        return FashionMnist(cfg["path"], cfg["hflip"])
    raise ValueError(f"bench/python: data.name = {name} is not mirrored (checkerboard, fashion-mnist)")
