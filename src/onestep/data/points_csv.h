// Point-cloud dataset read from CSV files: one point per line, comma-separated numbers, any
// dimension >= 1 (the same on every line). Blank lines and lines starting with '#' are
// skipped; the first remaining line is taken as a header and skipped if none of its fields is
// a number (e.g. "x,y"); a line mixing names and numbers is an error, like any other
// non-number.
#pragma once

#include "onestep/data/dataset.h"

#include <cstdint>
#include <memory>
#include <string>

namespace onestep {

// Loads the points of `path`. With an empty `test_path`, a fraction `test_fraction` (0 < f < 1,
// rounded to whole points, at least one on each side) is held out, chosen by a shuffle seeded
// with `split_seed`; otherwise all of `path` is used for training and `test_path` (same
// dimension) is the held-out set and `test_fraction`/`split_seed` are unused. train_batch
// draws rows uniformly with replacement; heldout(n) is the first min(n, size) held-out points.
// Throws UserError naming the file and 1-based line for unreadable, empty or malformed files.
std::unique_ptr<Dataset> make_points_dataset(const std::string& path, const std::string& test_path,
                                             double test_fraction, uint64_t split_seed);

}  // namespace onestep
