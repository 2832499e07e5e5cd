// The communicator suite on the in-process backend, for world sizes 1..8.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <thread>

#include "burst/local_world.h"
#include "burst/throttle.h"
#include "suite.h"

namespace burst {
namespace {

using comm::Communicator;

class LocalComm : public ::testing::TestWithParam<int> {
 protected:
  void run(const std::function<void(Communicator&)>& check) {
    comm::run_local_ranks(GetParam(), [&](Communicator& c) {
      c.set_timeout(std::chrono::seconds(20));
      check(c);
    });
  }
};

TEST_P(LocalComm, RingExchange) {
  run([](Communicator& c) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1001}}) testing::check_ring_exchange(c, n);
  });
}
TEST_P(LocalComm, OddByteMessages) { run(testing::check_odd_byte_messages); }
TEST_P(LocalComm, AllToAll) { run(testing::check_all_to_all); }
TEST_P(LocalComm, AllToAllv) { run(testing::check_all_to_allv); }
TEST_P(LocalComm, AllGather) { run(testing::check_all_gather); }
TEST_P(LocalComm, Reductions) { run(testing::check_reductions); }
TEST_P(LocalComm, Broadcast) { run(testing::check_broadcast); }
TEST_P(LocalComm, Barrier) { run(testing::check_barrier); }
TEST_P(LocalComm, Split) { run(testing::check_split); }
TEST_P(LocalComm, Topology) { run(testing::check_topology); }
TEST_P(LocalComm, Deadline) { run(testing::check_deadline); }
TEST_P(LocalComm, SizeMismatch) { run(testing::check_size_mismatch); }

INSTANTIATE_TEST_SUITE_P(WorldSizes, LocalComm, ::testing::Range(1, 9));

// The whole suite through emulated slow links (burst/throttle.h): 8 Gbit/s and 50 us, so the
// held sends, their release from waits and progress(), and splits are all exercised.
class ThrottledComm : public ::testing::TestWithParam<int> {
 protected:
  void run(const std::function<void(Communicator&)>& check) {
    comm::LinkModel model;
    model.inter_node_bytes_per_second = 1e9;
    model.inter_node_latency = std::chrono::microseconds(50);
    comm::run_local_ranks(GetParam(), [&](Communicator& c) {
      c.set_timeout(std::chrono::seconds(20));
      const auto slow = comm::throttled(c, model);
      check(*slow);
    });
  }
};
TEST_P(ThrottledComm, RingExchange) {
  run([](Communicator& c) {
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{100001}}) testing::check_ring_exchange(c, n);
  });
}
TEST_P(ThrottledComm, AllToAllv) { run(testing::check_all_to_allv); }
TEST_P(ThrottledComm, AllGather) { run(testing::check_all_gather); }
TEST_P(ThrottledComm, Reductions) { run(testing::check_reductions); }
TEST_P(ThrottledComm, Broadcast) { run(testing::check_broadcast); }
TEST_P(ThrottledComm, Split) { run(testing::check_split); }
INSTANTIATE_TEST_SUITE_P(WorldSizes, ThrottledComm, ::testing::Values(1, 2, 3, 5));

// A send takes at least bytes / rate + latency, one after another on a link; a send whose
// time has come is released by progress() while its rank computes.
TEST(ThrottledCommTiming, RateLatencyAndRelease) {
  comm::LinkModel model;
  model.inter_node_bytes_per_second = 50e6;  // 0.4 Gbit/s
  model.inter_node_latency = std::chrono::milliseconds(20);
  // The sender's clock at its first post, read by the receiver (ranks are threads here).
  std::atomic<comm::Clock::rep> posted_at{0};
  comm::run_local_ranks(2, [&](Communicator& c) {
    const auto slow = comm::throttled(c, model);
    std::vector<std::uint8_t> data(5'000'000), got(data.size());
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 3);
    c.barrier();
    if (c.rank() == 0) {
      const auto t0 = comm::Clock::now();
      posted_at = t0.time_since_epoch().count();
      // Two messages: the second waits for the first on the link (2 x 0.1 s) plus latency.
      comm::Request a = slow->isend(data.data(), data.size(), 1, 1);
      comm::Request b = slow->isend(data.data(), data.size(), 1, 2);
      // Compute for 0.3 s, calling progress(): both leave while this rank is busy.
      while (comm::Clock::now() - t0 < std::chrono::milliseconds(300)) slow->progress();
      a.wait(slow->deadline());
      b.wait(slow->deadline());
    } else {
      auto since_post = [&] {
        return std::chrono::duration<double>(comm::Clock::now().time_since_epoch() -
                                             comm::Clock::duration(posted_at.load()))
            .count();
      };
      slow->irecv(got.data(), got.size(), 0, 1).wait(slow->deadline());
      EXPECT_GE(since_post(), 0.1 + 0.02) << "first message faster than the link";
      EXPECT_EQ(got, data);
      slow->irecv(got.data(), got.size(), 0, 2).wait(slow->deadline());
      EXPECT_GE(since_post(), 0.2 + 0.02) << "the second message did not queue behind the first";
      EXPECT_EQ(got, data);
    }
  });
}

// Nodes of two ranks sharing one NIC (make_fabric): when both ranks of node 0 send to node
// 1 at once, the two messages share the NIC's rate and the last arrives after 2 x bytes /
// rate; with a link per rank (no fabric) both arrive after bytes / rate. Intra-node sends
// do not touch the NIC; a node with a NIC per rank behaves like links of their own.
TEST(ThrottledCommTiming, NodesShareTheirNic) {
  comm::LinkModel model;
  model.inter_node_bytes_per_second = 50e6;
  // nics: 1 per node (shared), 2 per node (one per rank), 0 (no fabric: a link per rank).
  for (int nics : {1, 2, 0}) {
    const bool shared = nics == 1;
    const auto fabric = nics > 0 ? comm::make_fabric(2, nics) : nullptr;
    std::atomic<comm::Clock::rep> posted_at{0};
    std::atomic<double> last{0};
    comm::run_local_ranks(4, [&](Communicator& c) {
      c.set_ranks_per_node(2);
      const auto slow = comm::throttled(c, model, fabric);
      std::vector<std::uint8_t> data(10'000'000, static_cast<std::uint8_t>(c.rank() + 1)), got(data.size());
      c.barrier();
      if (c.rank() == 0) posted_at = comm::Clock::now().time_since_epoch().count();
      c.barrier();
      if (c.rank() < 2) {
        // 0.2 s each on its own link; 0.4 s for the second through a shared NIC. An
        // intra-node message first, which must not queue on the NIC.
        std::uint8_t byte = 7, peer_byte = 0;
        comm::Request intra_send = slow->isend(&byte, 1, 1 - c.rank(), 3);
        slow->irecv(&peer_byte, 1, 1 - c.rank(), 3).wait(slow->deadline());
        intra_send.wait(slow->deadline());
        slow->isend(data.data(), data.size(), c.rank() + 2, 1).wait(slow->deadline());
      } else {
        slow->irecv(got.data(), got.size(), c.rank() - 2, 1).wait(slow->deadline());
        const double since = std::chrono::duration<double>(comm::Clock::now().time_since_epoch() -
                                                           comm::Clock::duration(posted_at.load())).count();
        double seen = last.load();
        while (since > seen && !last.compare_exchange_weak(seen, since)) {
        }
        EXPECT_EQ(got, std::vector<std::uint8_t>(got.size(), static_cast<std::uint8_t>(c.rank() - 1)));
      }
    });
    if (shared) {
      EXPECT_GE(last.load(), 0.4) << "two sends through one NIC finished faster than its rate";
    } else {
      EXPECT_GE(last.load(), 0.2);
      EXPECT_LT(last.load(), 0.35) << "links of their own were serialised (NICs per node: " << nics << ")";
    }
  }
}

// The switch serves a receiver's link in the order sends reach it, not the order they were
// booked: rank 0 posts a long send to rank 2 and then one to rank 1, which leaves its NIC only
// after the first (at 0.2 s); rank 3's send to rank 1, posted after both but leaving at once,
// takes the free link before then and arrives after its own 0.1 s, not behind rank 0's.
TEST(ThrottledCommTiming, SwitchFillsTheGapsOfAReceiversLink) {
  comm::LinkModel model;
  model.inter_node_bytes_per_second = 50e6;  // 5 MB: 0.1 s
  const auto fabric = comm::make_fabric(4, 1);
  std::atomic<comm::Clock::rep> posted_at{0};
  comm::run_local_ranks(4, [&](Communicator& c) {
    c.set_ranks_per_node(1);
    const auto slow = comm::throttled(c, model, fabric);
    std::vector<std::uint8_t> big(10'000'000, 1), small(5'000'000, 2), got(big.size());
    c.barrier();
    if (c.rank() == 0) {
      posted_at = comm::Clock::now().time_since_epoch().count();
      comm::Request first = slow->isend(big.data(), big.size(), 2, 1);
      comm::Request second = slow->isend(small.data(), small.size(), 1, 1);
      c.barrier();
      first.wait(slow->deadline());
      second.wait(slow->deadline());
    } else if (c.rank() == 3) {
      c.barrier();  // after rank 0 has booked both
      slow->isend(small.data(), small.size(), 1, 2).wait(slow->deadline());
    } else if (c.rank() == 1) {
      c.barrier();
      got.resize(small.size());
      slow->irecv(got.data(), got.size(), 3, 2).wait(slow->deadline());
      const double since = std::chrono::duration<double>(comm::Clock::now().time_since_epoch() -
                                                         comm::Clock::duration(posted_at.load())).count();
      EXPECT_GE(since, 0.1);
      EXPECT_LT(since, 0.25) << "rank 3's send waited behind one that reaches the switch later";
      slow->irecv(got.data(), got.size(), 0, 1).wait(slow->deadline());
      EXPECT_EQ(got, small);
    } else {
      c.barrier();
      slow->irecv(got.data(), got.size(), 0, 1).wait(slow->deadline());
      EXPECT_EQ(got, big);
    }
  });
}

// A split keeps the world's link classes: a node's own communicator (which sees one node)
// sends at the intra-node rate, not the inter-node one, and a communicator across nodes at
// the inter-node rate (the double ring runs on such splits).
TEST(ThrottledCommTiming, SplitsKeepTheWorldsLinkClasses) {
  comm::LinkModel model;
  model.inter_node_bytes_per_second = 20e6;  // 1 MB: 0.05 s across nodes, unthrottled inside
  comm::run_local_ranks(4, [&](Communicator& c) {
    c.set_ranks_per_node(2);
    const auto slow = comm::throttled(c, model);
    const int node = c.rank() / 2, local = c.rank() % 2;
    for (bool within : {true, false}) {
      auto part = within ? slow->split(node, local) : slow->split(local, node);
      std::vector<std::uint8_t> data(1'000'000, 1), got(data.size());
      part->barrier();
      const auto t0 = comm::Clock::now();
      const int peer = 1 - part->rank();
      comm::Request r = part->irecv(got.data(), got.size(), peer, 5);
      part->isend(data.data(), data.size(), peer, 5).wait(part->deadline());
      r.wait(part->deadline());
      const double s = std::chrono::duration<double>(comm::Clock::now() - t0).count();
      if (within) {
        EXPECT_LT(s, 0.04) << "a node's own communicator was throttled as inter-node";
      } else {
        EXPECT_GE(s, 0.05) << "a communicator across nodes was not throttled";
      }
    }
  });
}

// 64 MiB messages around the ring (16 M distinct uint32 values per rank).
TEST(LocalCommLarge, RingExchange64MiB) {
  comm::run_local_ranks(3, [](Communicator& c) { testing::check_ring_exchange(c, std::size_t{16} << 20); });
}

TEST(LocalCommTopology, OverrideGroupsRanksIntoNodes) {
  setenv("BURST_RANKS_PER_NODE", "3", 1);
  comm::run_local_ranks(8, testing::check_topology);
  comm::run_local_ranks(8, [](Communicator& c) {
    // A split keeps the node structure of its members: odd ranks 1,3,5,7 sit on nodes 0,1,1,2.
    auto odd = c.split(c.rank() % 2, c.rank());
    if (c.rank() % 2 == 1) {
      EXPECT_EQ(odd->node_of_rank(), (std::vector<int>{0, 1, 1, 2}));
    }
  });
  unsetenv("BURST_RANKS_PER_NODE");
}

// A rank that dies mid-ring: its peers fail on their deadlines and the runner reports the
// first failure, naming the rank; nothing hangs.
TEST(LocalCommFailure, RankThatExitsMidRing) {
  const auto t0 = comm::Clock::now();
  try {
    comm::run_local_ranks(4, [](Communicator& c) {
      c.set_timeout(std::chrono::milliseconds(500));
      std::uint32_t out = 1, in = 0;
      for (int step = 0; step < 5; ++step) {
        if (c.rank() == 2 && step == 2) throw Error("rank 2 leaves the ring");
        c.sendrecv(&out, 4, (c.rank() + 1) % 4, &in, 4, (c.rank() + 3) % 4, step);
      }
    });
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("rank"), std::string::npos) << msg;
    EXPECT_TRUE(msg.find("leaves the ring") != std::string::npos || msg.find("deadline") != std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::duration<double>(comm::Clock::now() - t0).count(), 5.0);
}

TEST(LocalCommErrors, BadArgumentsNameThemselves) {
  comm::run_local_ranks(2, [](Communicator& c) {
    std::uint32_t x = 0;
    EXPECT_THROW(c.isend(&x, 4, 2, 0), Error);
    EXPECT_THROW(c.irecv(&x, 4, 0, -1), Error);
    try {
      c.isend(&x, 4, 5, 0);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("peer must be in [0, 2), got 5"), std::string::npos) << e.what();
    }
  });
}

// A rank that fails ends its peers' waits at once (no deadline waited out), and its error is
// the one reported, of its own kind, whatever the peers were doing: waiting on a receive,
// in a collective, or computing between progress calls.
TEST(LocalAbort, AFailingRankEndsEveryPeerAtOnce) {
  struct Case {
    std::function<void()> fail;
    const char* message;
    bool communication;  // the reported error is a CommError
  };
  const Case cases[] = {
      {[] { fail("bad input on one rank"); }, "rank 1: bad input on one rank", false},
      {[] { throw comm::TimeoutError("rank 1 receiving 4 bytes from rank 0: no progress"); },
       "rank 1 receiving 4 bytes from rank 0: no progress", true},
      {[] { throw OutputError("disk full"); }, "rank 1: disk full", false},
  };
  for (const Case& cs : cases) {
    const auto t0 = comm::Clock::now();
    try {
      comm::run_local_ranks(4, [&](Communicator& c) {
        c.set_timeout(std::chrono::seconds(60));
        std::uint32_t x = 0;
        if (c.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the others are waiting by now
          cs.fail();
        } else if (c.rank() == 0) {
          c.irecv(&x, 4, 1, 0).wait(c.deadline());
        } else if (c.rank() == 2) {
          c.barrier();
        } else {
          for (;;) c.progress();  // a computing rank: its kernels call progress between tiles
        }
      });
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), cs.message);
      EXPECT_EQ(dynamic_cast<const comm::CommError*>(&e) != nullptr, cs.communication) << e.what();
      EXPECT_EQ(exit_status_of(e), cs.communication ? kExitCommunication
                                   : dynamic_cast<const OutputError*>(&e) ? kExitOther : kExitBadInput);
    }
    EXPECT_LT(std::chrono::duration<double>(comm::Clock::now() - t0).count(), 5.0) << cs.message;
  }
}

}  // namespace
}  // namespace burst
