// The training loop around TrainingState (training_state.h: the method's modules on the
// device, frozen modules, optimizer, learning-rate schedule, gradient clipping, the EMA and a
// fast target EMA for methods that ask for one, and the step itself): the non-finite-loss guard, logging to
// metrics.jsonl with a progress line, periodic sample pictures, atomic checkpoints, exact
// resume, and the end-of-run evaluation and report.html. It knows neither which method nor
// which network it runs.
#pragma once

#include <string>

#include "onestep/core/config.h"

namespace onestep {

struct TrainRequest {
  Config config;
  std::string out_dir;
  bool resume = false;  // continue the run in out_dir from its checkpoint
};

// Runs training; throws UserError on bad input and TrainingStopped when the guard stops it.
void train(const TrainRequest& request);

class TrainingStopped : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace onestep
