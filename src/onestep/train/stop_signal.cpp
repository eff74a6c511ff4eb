// Graceful stop on SIGINT and SIGTERM (see stop_signal.h).
#include "onestep/train/stop_signal.h"

#include <unistd.h>

#include <csignal>

namespace onestep {
namespace {

volatile std::sig_atomic_t first_signal = 0;
struct sigaction previous_int, previous_term;

void on_stop_signal(int signal_number) {
  if (first_signal != 0) _exit(128 + signal_number);  // the second signal: at once
  first_signal = signal_number;
  static const char message[] = "\nstopping after this step (a second signal stops at once)\n";
  [[maybe_unused]] const auto written = write(STDERR_FILENO, message, sizeof(message) - 1);
}

}  // namespace

StopSignalScope::StopSignalScope() {
  first_signal = 0;
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  action.sa_flags = SA_RESTART;  // blocking calls (files, sockets) carry on after the first signal
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, &previous_int);
  sigaction(SIGTERM, &action, &previous_term);
}

StopSignalScope::~StopSignalScope() {
  sigaction(SIGINT, &previous_int, nullptr);
  sigaction(SIGTERM, &previous_term, nullptr);
}

int StopSignalScope::received() const { return first_signal; }

}  // namespace onestep
