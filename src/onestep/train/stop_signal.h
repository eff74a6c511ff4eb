// Graceful stop on SIGINT and SIGTERM (Ctrl-C, SLURM preemption, torchrun forwarding): while a
// StopSignalScope lives, the first of these signals only sets a flag that the training loop reads
// after each step (it then writes a checkpoint and exits 0); a second one ends the process at
// once with status 128 + signal number. Leaving the scope restores the previous handlers.
#pragma once

namespace onestep {

class StopSignalScope {
 public:
  StopSignalScope();
  ~StopSignalScope();
  StopSignalScope(const StopSignalScope&) = delete;
  StopSignalScope& operator=(const StopSignalScope&) = delete;

  // The signal number received first, or 0.
  int received() const;
};

}  // namespace onestep
