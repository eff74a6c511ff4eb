#!/usr/bin/env python3
"""Writes the harder point data of docs/results.md as CSV files for `data.name=points:FILE`:

- grid25.csv: 2-D, 25 narrow Gaussian modes (std 0.05) on a 5 x 5 grid of spacing 1, centred;
- mixture10d.csv: 10-D, 16 Gaussian modes (std 0.1) at centres drawn uniformly in [-2, 2]^10.

Each file holds 50,000 points (equal mode weights), seeded, so the files are the same on every
machine. Usage: scripts/make-point-mixtures.py [OUT_DIR]   (default runs/point-mixtures)
"""
import os
import sys

import numpy as np

POINTS = 50_000


def write(path, points):
    header = ",".join(f"x{i}" for i in range(points.shape[1]))
    np.savetxt(path, points, fmt="%.6f", delimiter=",", header=header, comments="")
    print(f"{path}: {points.shape[0]} points, dimension {points.shape[1]}")


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "runs/point-mixtures"
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)

    grid = np.array([(i, j) for i in range(5) for j in range(5)], dtype=np.float64) - 2.0
    modes = rng.integers(0, len(grid), POINTS)
    write(os.path.join(out, "grid25.csv"), grid[modes] + 0.05 * rng.standard_normal((POINTS, 2)))

    centres = rng.uniform(-2.0, 2.0, (16, 10))
    modes = rng.integers(0, len(centres), POINTS)
    write(os.path.join(out, "mixture10d.csv"), centres[modes] + 0.1 * rng.standard_normal((POINTS, 10)))


if __name__ == "__main__":
    main()
