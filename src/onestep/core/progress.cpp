// Progress line (see progress.h).
#include "onestep/core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace onestep {

Progress::Progress(int64_t start_step, int64_t total_steps, int64_t every)
    : start_step_(start_step),
      total_steps_(total_steps),
      every_(every),
      last_step_(start_step),
      tty_(isatty(fileno(stdout)) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

double Progress::steps_per_second() const {
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  return elapsed > 0 ? static_cast<double>(last_step_ - start_step_) / elapsed : 0.0;
}

void Progress::update(int64_t step, const std::string& detail) {
  last_step_ = step;
  const auto now = std::chrono::steady_clock::now();
  const bool done = step >= total_steps_;
  if (tty_) {
    if (!done && std::chrono::duration<double>(now - last_print_).count() < 0.2) return;
  } else if (!done && step % every_ != 0) {
    return;
  }
  last_print_ = now;
  const double rate = steps_per_second();
  const double eta = rate > 0 ? static_cast<double>(total_steps_ - step) / rate : 0.0;
  std::printf("%sstep %lld/%lld  %s  %.1f steps/s  ETA %s%s", tty_ ? "\r\033[K" : "", static_cast<long long>(step),
              static_cast<long long>(total_steps_), detail.c_str(), rate, format_duration(eta).c_str(),
              tty_ ? "" : "\n");
  std::fflush(stdout);
}

void Progress::finish() {
  if (tty_) std::printf("\n");
  std::fflush(stdout);
}

std::string format_duration(double seconds) {
  const auto total = static_cast<long long>(seconds + 0.5);
  char out[32];
  if (total >= 3600) {
    std::snprintf(out, sizeof(out), "%lldh%02lldm", total / 3600, (total % 3600) / 60);
  } else if (total >= 60) {
    std::snprintf(out, sizeof(out), "%lldm%02llds", total / 60, total % 60);
  } else {
    std::snprintf(out, sizeof(out), "%llds", total);
  }
  return out;
}

}  // namespace onestep
