// Input checks of the set-to-set metrics (see row_sets.h).
#include "onestep/eval/row_sets.h"

#include <stdexcept>
#include <string>

namespace onestep {

torch::Tensor as_float64_rows(const torch::Tensor& t, const char* name, int64_t min_rows) {
  if (!t.defined() || t.dim() != 2) {
    throw std::invalid_argument(std::string(name) + " must be a 2-D (rows x dims) tensor");
  }
  if (!t.is_floating_point()) {
    throw std::invalid_argument(std::string(name) + " must have a floating-point dtype");
  }
  if (t.size(0) < min_rows) {
    throw std::invalid_argument(std::string(name) + " needs at least " + std::to_string(min_rows) + " rows, got " +
                                std::to_string(t.size(0)));
  }
  if (t.size(1) < 1) {
    throw std::invalid_argument(std::string(name) + " needs at least 1 column");
  }
  return t.detach().to(torch::kCPU, torch::kFloat64).contiguous();
}

void check_same_columns(const torch::Tensor& x, const torch::Tensor& y, const char* what) {
  if (x.size(1) != y.size(1)) {
    throw std::invalid_argument(std::string(what) + " differ in dimension: " + std::to_string(x.size(1)) + " vs " +
                                std::to_string(y.size(1)));
  }
}

}  // namespace onestep
