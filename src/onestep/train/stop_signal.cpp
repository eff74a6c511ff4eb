// Graceful stop on SIGINT and SIGTERM (see stop_signal.h).
#include "onestep/train/stop_signal.h"

#include <unistd.h>

#include <atomic>
#include <csignal>

namespace onestep {
namespace {

// Atomics (lock-free, so safe in a handler): the two signals may reach two threads at once.
static_assert(std::atomic<int>::is_always_lock_free && std::atomic<bool>::is_always_lock_free);
std::atomic<int> first_signal{0};
std::atomic<bool> message_written{false};
struct sigaction previous_int, previous_term;

void write_message() {
  static const char message[] = "\nstopping after this step (a second signal stops at once)\n";
  [[maybe_unused]] const auto written = write(STDERR_FILENO, message, sizeof(message) - 1);
}

void on_stop_signal(int signal_number) {
  int none = 0;
  if (!first_signal.compare_exchange_strong(none, signal_number)) {
    // The second signal: at once. The first one's message may still be on its way in another
    // thread, which _exit would cut off: write it here unless it is out (at worst it shows twice).
    if (!message_written.load()) write_message();
    _exit(128 + signal_number);
  }
  write_message();
  message_written.store(true);
}

}  // namespace

StopSignalScope::StopSignalScope() {
  first_signal = 0;
  message_written = false;
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
