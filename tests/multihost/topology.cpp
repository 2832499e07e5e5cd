// Checks, under mpirun across namespace hosts (scripts/multihost.sh), that the communicator's
// node grouping is the hosts' grouping: two ranks share a node exactly when they run on the
// same host (hostname), and the node count is the host count. Rank 0 prints one line per rank.
// A mismatch fails on every rank with a message naming both ranks and their hosts.
//   mh_topology HOSTS
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "burst/world.h"
#include "burst/error.h"

int main(int argc, char** argv) {
  const int hosts = argc > 1 ? std::atoi(argv[1]) : 0;
  if (hosts <= 0 || !burst::comm::launched_by_mpi()) {
    std::fprintf(stderr, "usage: mpirun ... mh_topology HOSTS (HOSTS > 0, under an MPI launcher)\n");
    return 2;
  }
  burst::comm::run_world(0, [&](burst::comm::Communicator& c) {
    constexpr std::size_t kName = 64;
    std::array<char, kName> mine{};
    BURST_CHECK(gethostname(mine.data(), kName - 1) == 0, "gethostname failed on rank ", c.rank());
    std::vector<char> all(kName * static_cast<std::size_t>(c.world_size()));
    c.all_gather(mine.data(), all.data(), kName);
    auto host = [&](int r) { return std::string(all.data() + kName * static_cast<std::size_t>(r)); };
    const auto& node = c.node_of_rank();
    std::set<std::string> distinct;
    for (int a = 0; a < c.world_size(); ++a) {
      distinct.insert(host(a));
      for (int b = a + 1; b < c.world_size(); ++b) {
        const bool same_node = node[static_cast<std::size_t>(a)] == node[static_cast<std::size_t>(b)];
        BURST_CHECK(same_node == (host(a) == host(b)), "node grouping does not match the hosts: rank ", a, " (host ",
                    host(a), ", node ", node[static_cast<std::size_t>(a)], ") and rank ", b, " (host ", host(b),
                    ", node ", node[static_cast<std::size_t>(b)], ") are ", same_node ? "" : "not ",
                    "grouped on one node");
      }
    }
    BURST_CHECK(static_cast<int>(distinct.size()) == hosts, "expected ranks on ", hosts, " hosts, found ",
                distinct.size());
    BURST_CHECK(c.node_count() == hosts, "expected ", hosts, " nodes, the communicator has ", c.node_count());
    if (c.rank() == 0) {
      for (int r = 0; r < c.world_size(); ++r)
        std::printf("topology: rank %d on host %s, node %d\n", r, host(r).c_str(), node[static_cast<std::size_t>(r)]);
      std::printf("topology: %d ranks, %d nodes = %d hosts: grouping matches\n", c.world_size(), c.node_count(), hosts);
    }
  });
  return 0;
}
