// A ring in which rank 1 fails mid-way (used by dead_rank.sh under mpirun): with `exit` it
// leaves the process, with `hang` it stays alive but stops communicating. Either way the
// others must end with a non-zero exit and a clear message within their deadline.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "burst/world.h"

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "exit";
  burst::comm::run_world(0, [&](burst::comm::Communicator& c) {
    c.set_timeout(std::chrono::seconds(5));
    std::uint32_t out = static_cast<std::uint32_t>(c.rank()), in = 0;
    for (int step = 0; step < 10; ++step) {
      if (c.rank() == 1 && step == 3) {
        std::fprintf(stderr, "dead_rank: rank 1 %s at step 3\n", mode == "hang" ? "hangs" : "exits");
        if (mode != "hang") std::_Exit(3);
        std::this_thread::sleep_for(std::chrono::seconds(50));
      }
      c.sendrecv(&out, 4, (c.rank() + 1) % c.world_size(), &in, 4,
                 (c.rank() - 1 + c.world_size()) % c.world_size(), step);
    }
  });
  return 0;
}
