// UserError: the one exception type for bad user input (config keys and values, data and
// checkpoint files). The CLI prints its message as one line on stderr and exits with status 2.
#pragma once

#include <stdexcept>
#include <string>

namespace onestep {

class UserError : public std::runtime_error {
 public:
  explicit UserError(const std::string& message) : std::runtime_error(message) {}
};

// Exit status for bad input, as promised by the contract in the README.
constexpr int kUserErrorExitStatus = 2;

}  // namespace onestep
