// The training loop around TrainingState (training_state.h: the method's modules on the
// device, frozen modules, optimizer, learning-rate schedule, gradient clipping, the EMA and a
// fast target EMA for methods that ask for one, and the step itself): the non-finite-loss guard, logging to
// metrics.jsonl with a progress line, periodic sample pictures, atomic checkpoints, exact
// resume, a graceful stop on SIGINT/SIGTERM (checkpoint, then exit 0), and the end-of-run
// evaluation and report.html. Started by torchrun or `onestep launch` (WORLD_SIZE > 1), it
// trains data-parallel: each process draws its share of train.batch_size from its own streams,
// gradients are averaged over the processes (distributed.h), rank 0 alone writes files, and the
// processes share the sampling of the final evaluation. It knows neither which method nor which
// network it runs.
#pragma once

#include <string>

#include "onestep/core/config.h"

namespace onestep {

struct TrainRequest {
  Config config;
  std::string out_dir;
  bool resume = false;  // continue the run in out_dir from its checkpoint
  int local_rank = 0;   // the CUDA device of this process in a multi-process run
};

// Runs training, in one process or, with WORLD_SIZE > 1 in the environment, as one rank of a
// data-parallel run. Throws UserError on bad input, TrainingStopped when the guard stops it and
// CollectiveError when another process dies or hangs.
void train(TrainRequest request);

class TrainingStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace onestep
