// Local multi-process launcher (see launch.h).
#include "onestep/train/launch.h"

#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "onestep/core/error.h"

namespace onestep {
namespace {

// The ranks' process ids, for the signal handler (async-signal-safe: a fixed array).
constexpr int kMaxRanks = 1024;
pid_t rank_pids[kMaxRanks];
volatile std::sig_atomic_t rank_count = 0;

void forward_signal(int signal_number) {
  for (int r = 0; r < rank_count; ++r)
    if (rank_pids[r] > 0) kill(rank_pids[r], signal_number);
}

}  // namespace

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error_number = errno;
    if (fd >= 0) close(fd);
    throw UserError(std::string("onestep launch: cannot find a free port (") + std::strerror(error_number) +
                    "); choose one with --port");
  }
  close(fd);
  return ntohs(address.sin_port);
}

int launch_local_ranks(int processes, const std::vector<std::string>& args, int port) {
  if (processes < 1 || processes > kMaxRanks)
    throw UserError("onestep launch: -n " + std::to_string(processes) + ": expected 1 to " + std::to_string(kMaxRanks));
  if (args.empty() || args[0] != "train")
    throw UserError("onestep launch: expected the command after --, e.g. `onestep launch -n 2 -- train -c FILE`; got '" +
                    (args.empty() ? std::string() : args[0]) + "'");
  if (port == 0) port = free_port();
  std::vector<char*> argv;
  static char program[] = "onestep";
  argv.push_back(program);
  for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  struct sigaction action = {};
  action.sa_handler = forward_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
  const pid_t launcher = getpid();
  std::fflush(stdout);
  std::fflush(stderr);
  for (int r = 0; r < processes; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      forward_signal(SIGKILL);
      throw UserError(std::string("onestep launch: fork failed (") + std::strerror(errno) + ")");
    }
    if (pid == 0) {
      // Its own process group, so that a terminal's Ctrl-C reaches the ranks once, through the
      // launcher; SIGTERM when the launcher dies.
      setpgid(0, 0);
      prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (getppid() != launcher) _exit(1);
      signal(SIGINT, SIG_DFL);
      signal(SIGTERM, SIG_DFL);
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(processes).c_str(), 1);
      setenv("LOCAL_WORLD_SIZE", std::to_string(processes).c_str(), 1);
      setenv("MASTER_ADDR", "127.0.0.1", 1);
      setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      unsetenv("TORCHELASTIC_USE_AGENT_STORE");
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "onestep launch: cannot start rank %d (%s)\n", r, std::strerror(errno));
      _exit(127);
    }
    rank_pids[r] = pid;
    rank_count = r + 1;
  }
  int first_failure = 0;
  for (int left = processes; left > 0;) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, 0);
    if (pid < 0) {
      if (errno == EINTR) continue;
      break;
    }
    int rank = 0;
    while (rank < processes && rank_pids[rank] != pid) ++rank;
    if (rank == processes) continue;
    rank_pids[rank] = 0;
    --left;
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (code != 0) {
      std::fprintf(stderr, "onestep launch: rank %d exited with status %d\n", rank, code);
      if (first_failure == 0) first_failure = code;
    }
  }
  rank_count = 0;
  return first_failure;
}

}  // namespace onestep
