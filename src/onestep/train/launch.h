// `onestep launch -n N -- train ...`: N ranks of one data-parallel run on this machine, for
// users without torchrun. Each rank is this program started again with the given arguments and
// the variables torchrun would set (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR =
// 127.0.0.1, MASTER_PORT). SIGINT and SIGTERM are passed on to every rank (a graceful stop; a
// second one stops them at once); the ranks get SIGTERM if the launcher itself dies.
#pragma once

#include <string>
#include <vector>

namespace onestep {

// Runs the ranks to their end. Returns 0 when all exit 0, else the exit status of the first rank
// that failed (128 + signal number for a rank killed by a signal). `port` 0: a free port.
int launch_local_ranks(int processes, const std::vector<std::string>& args, int port);

// A TCP port that was free a moment ago on the loopback interface (UserError when none is).
int free_port();

}  // namespace onestep
