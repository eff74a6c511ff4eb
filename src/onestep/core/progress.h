// Progress reporting for long loops: on a terminal one line rewritten in place (at most ~5
// times a second); otherwise (logs, CI) plain lines every `every` steps.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace onestep {

class Progress {
 public:
  Progress(int64_t start_step, int64_t total_steps, int64_t every);
  // Reports that `step` steps are done; `detail` is appended (e.g. "loss 0.123").
  void update(int64_t step, const std::string& detail);
  // Ends the in-place line, if any.
  void finish();
  double steps_per_second() const;

 private:
  int64_t start_step_, total_steps_, every_, last_step_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_print_;
};

// "1h02m", "3m05s", "12s".
std::string format_duration(double seconds);

}  // namespace onestep
