// Input checks shared by the set-to-set metrics (point metrics, feature metrics): a set is a
// 2-D floating-point tensor of rows; both sets of a comparison have the same number of columns.
// Malformed input throws std::invalid_argument.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace onestep {

// `t` checked (2-D, floating point, at least `min_rows` rows and one column) and returned as a
// contiguous float64 CPU tensor without gradient; `name` is used in the message.
torch::Tensor as_float64_rows(const torch::Tensor& t, const char* name, int64_t min_rows);

// Throws unless x and y have the same number of columns; `what` names the sets ("point sets").
void check_same_columns(const torch::Tensor& x, const torch::Tensor& y, const char* what);

}  // namespace onestep
