#include "suite.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

namespace burst::testing {

using comm::Communicator;
using comm::Op;

namespace {
// A value no other (rank, index) pair produces, for index < 2^27.
std::uint32_t stamp(int rank, std::size_t i) {
  return (static_cast<std::uint32_t>(rank) << 27) | static_cast<std::uint32_t>(i);
}
int right_of(const Communicator& c) { return (c.rank() + 1) % c.world_size(); }
int left_of(const Communicator& c) { return (c.rank() - 1 + c.world_size()) % c.world_size(); }
}  // namespace

void check_ring_exchange(Communicator& c, std::size_t count) {
  std::vector<std::uint32_t> out(count), in(count, 0xdeadbeef);
  for (std::size_t i = 0; i < count; ++i) out[i] = stamp(c.rank(), i);
  c.traffic().reset();
  const std::size_t bytes = count * sizeof(std::uint32_t);
  c.sendrecv(out.data(), bytes, right_of(c), in.data(), bytes, left_of(c), 5);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < count; ++i) wrong += in[i] != stamp(left_of(c), i);
  EXPECT_EQ(wrong, 0u) << "rank " << c.rank() << " count " << count;
  EXPECT_EQ(c.traffic().sent(Op::kPointToPoint, right_of(c)), bytes);
  EXPECT_EQ(c.traffic().received(Op::kPointToPoint, left_of(c)), bytes);
  EXPECT_EQ(c.traffic().total_sent(), bytes);
}

void check_odd_byte_messages(Communicator& c) {
  for (std::size_t n : {std::size_t{1}, std::size_t{7}, std::size_t{1001}}) {
    std::vector<unsigned char> out(n), in(n, 0);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<unsigned char>(c.rank() * 37 + i * 11 + 1);
    c.sendrecv(out.data(), n, right_of(c), in.data(), n, left_of(c), 6);
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_EQ(in[i], static_cast<unsigned char>(left_of(c) * 37 + i * 11 + 1)) << n;
    }
  }
}

void check_all_to_all(Communicator& c) {
  const int p = c.world_size();
  for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{333}}) {
    std::vector<std::uint32_t> out(count * p), in(count * p, 0xdeadbeef);
    for (int to = 0; to < p; ++to)
      for (std::size_t i = 0; i < count; ++i) out[to * count + i] = stamp(c.rank(), to * count + i);
    c.traffic().reset();
    c.all_to_all(out.data(), in.data(), count * sizeof(std::uint32_t));
    for (int from = 0; from < p; ++from)
      for (std::size_t i = 0; i < count; ++i)
        ASSERT_EQ(in[from * count + i], stamp(from, c.rank() * count + i)) << "from " << from;
    EXPECT_EQ(c.traffic().total_sent(Op::kAllToAll), (p - 1) * count * sizeof(std::uint32_t));
  }
}

void check_all_to_allv(Communicator& c) {
  const int p = c.world_size();
  // Rank r sends (3r + q) % 4 values to rank q: some pairs exchange nothing.
  auto count = [](int from, int to) { return static_cast<std::size_t>((3 * from + to) % 4); };
  std::vector<std::size_t> sb(p), so(p), rb(p), ro(p);
  std::size_t send_total = 0, recv_total = 0;
  for (int q = 0; q < p; ++q) {
    so[q] = send_total;
    sb[q] = count(c.rank(), q) * 4;
    send_total += sb[q];
    ro[q] = recv_total;
    rb[q] = count(q, c.rank()) * 4;
    recv_total += rb[q];
  }
  std::vector<std::uint32_t> out(send_total / 4), in(recv_total / 4, 0xdeadbeef);
  for (int q = 0; q < p; ++q)
    for (std::size_t i = 0; i < sb[q] / 4; ++i) out[so[q] / 4 + i] = stamp(c.rank(), static_cast<std::size_t>(q) * 16 + i);
  c.all_to_allv(out.data(), sb, so, in.data(), rb, ro);
  for (int q = 0; q < p; ++q)
    for (std::size_t i = 0; i < rb[q] / 4; ++i)
      ASSERT_EQ(in[ro[q] / 4 + i], stamp(q, static_cast<std::size_t>(c.rank()) * 16 + i)) << "from " << q;
}

void check_all_gather(Communicator& c) {
  const int p = c.world_size();
  for (std::size_t count : {std::size_t{0}, std::size_t{1}, std::size_t{1001}}) {
    std::vector<std::uint32_t> mine(count), all(count * p, 0xdeadbeef);
    for (std::size_t i = 0; i < count; ++i) mine[i] = stamp(c.rank(), i);
    c.all_gather(mine.data(), all.data(), count * 4);
    for (int r = 0; r < p; ++r)
      for (std::size_t i = 0; i < count; ++i) ASSERT_EQ(all[r * count + i], stamp(r, i)) << "block " << r;
  }
}

void check_reductions(Communicator& c) {
  const int p = c.world_size();
  const double ranks_sum = p * (p + 1) / 2.0;
  // reduce-scatter: exact small integers in double and float.
  const std::size_t count = 37;
  std::vector<double> send(count * p), recv(count, -1.0);
  std::vector<float> sendf(count * p), recvf(count, -1.0f);
  for (std::size_t i = 0; i < count * p; ++i) {
    send[i] = (c.rank() + 1) * static_cast<double>(i + 1);
    sendf[i] = static_cast<float>(send[i]);
  }
  c.reduce_scatter_sum(send.data(), recv.data(), count);
  c.reduce_scatter_sum(sendf.data(), recvf.data(), count);
  for (std::size_t i = 0; i < count; ++i) {
    const double expect = ranks_sum * static_cast<double>(c.rank() * count + i + 1);
    ASSERT_EQ(recv[i], expect) << i;
    ASSERT_EQ(recvf[i], static_cast<float>(expect)) << i;
  }
  // all-reduce of a count not divisible by the world size.
  std::vector<double> data(1001);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = (c.rank() + 1) * static_cast<double>(i);
  c.all_reduce_sum(data.data(), data.size());
  for (std::size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], ranks_sum * static_cast<double>(i)) << i;
  // Random floats: every rank must end with bitwise the same sums.
  std::mt19937 gen(static_cast<unsigned>(c.rank()) + 1);
  std::normal_distribution<float> dist;
  std::vector<float> noise(517);
  for (float& x : noise) x = dist(gen);
  c.all_reduce_sum(noise.data(), noise.size());
  std::vector<float> everyone(noise.size() * p);
  c.all_gather(noise.data(), everyone.data(), noise.size() * sizeof(float));
  for (int r = 0; r < p; ++r)
    ASSERT_EQ(std::memcmp(everyone.data() + r * noise.size(), noise.data(), noise.size() * sizeof(float)), 0) << r;
}

void check_broadcast(Communicator& c) {
  for (int root = 0; root < c.world_size(); ++root) {
    std::vector<std::uint32_t> data(257, 0xdeadbeef);
    if (c.rank() == root)
      for (std::size_t i = 0; i < data.size(); ++i) data[i] = stamp(root, i);
    c.broadcast(data.data(), data.size() * 4, root);
    for (std::size_t i = 0; i < data.size(); ++i) ASSERT_EQ(data[i], stamp(root, i)) << "root " << root;
  }
}

void check_barrier(Communicator& c) {
  for (int i = 0; i < 20; ++i) c.barrier();
  c.traffic().reset();
  c.barrier();
  EXPECT_EQ(c.traffic().total_sent(Op::kBarrier), 0u);  // empty messages
}

void check_split(Communicator& c) {
  // Even and odd ranks, each ordered by descending parent rank; rank 0 opts out.
  const int color = c.rank() == 0 ? -1 : c.rank() % 2;
  std::unique_ptr<Communicator> child = c.split(color, -c.rank());
  if (c.rank() == 0) {
    EXPECT_EQ(child, nullptr);
    return;
  }
  ASSERT_NE(child, nullptr);
  std::vector<int> expect;
  for (int r = c.world_size() - 1; r >= 1; --r)
    if (r % 2 == color) expect.push_back(r);
  ASSERT_EQ(child->world_size(), static_cast<int>(expect.size()));
  EXPECT_EQ(expect[static_cast<std::size_t>(child->rank())], c.rank());
  std::vector<int> parents(expect.size());
  const int me = c.rank();
  child->all_gather(&me, parents.data(), sizeof(int));
  EXPECT_EQ(parents, expect);
  // The child's traffic is its own; a collective on it does not match parent messages.
  int sum_check = c.rank();
  double as_double = sum_check;
  child->all_reduce_sum(&as_double, 1);
  double expect_sum = 0;
  for (int r : expect) expect_sum += r;
  EXPECT_EQ(as_double, expect_sum);
}

void check_topology(Communicator& c) {
  const auto& nodes = c.node_of_rank();
  ASSERT_EQ(static_cast<int>(nodes.size()), c.world_size());
  if (const char* env = std::getenv("BURST_RANKS_PER_NODE"); env != nullptr && *env != '\0') {
    const int per_node = std::atoi(env);
    for (int r = 0; r < c.world_size(); ++r) EXPECT_EQ(nodes[static_cast<std::size_t>(r)], r / per_node);
    EXPECT_EQ(c.node_count(), (c.world_size() + per_node - 1) / per_node);
  } else {
    for (int r = 0; r < c.world_size(); ++r) EXPECT_EQ(nodes[static_cast<std::size_t>(r)], 0);  // one host
  }
}

// Rank 0 waits for a message rank 1 never sends: it must fail within the deadline with an
// error naming itself, the peer, the operation and the tag; then everyone finishes cleanly.
void check_deadline(Communicator& c) {
  if (c.world_size() < 2) return;
  if (c.rank() == 0) {
    std::uint32_t never = 0;
    comm::Request r = c.irecv(&never, sizeof(never), 1, 77);
    const auto t0 = comm::Clock::now();
    try {
      r.wait(t0 + std::chrono::milliseconds(300));
      ADD_FAILURE() << "no timeout";
    } catch (const comm::TimeoutError& e) {
      const double waited = std::chrono::duration<double>(comm::Clock::now() - t0).count();
      EXPECT_GE(waited, 0.29);
      EXPECT_LT(waited, 2.0);
      const std::string msg = e.what();
      for (const char* part : {"rank 0", "from rank 1", "point-to-point", "tag 77", "4 bytes", "deadline"})
        EXPECT_NE(msg.find(part), std::string::npos) << msg;
    }
  }
  c.barrier();
}

void check_size_mismatch(Communicator& c) {
  if (c.world_size() < 2) return;
  std::uint64_t payload[2] = {1, 2};
  if (c.rank() == 1) {
    comm::Request r = c.isend(payload, 8, 0, 9);  // one value where two are expected
    r.wait(c.deadline());
  } else if (c.rank() == 0) {
    comm::Request r = c.irecv(payload, 16, 1, 9);
    try {
      r.wait(c.deadline());
      ADD_FAILURE() << "no size error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("size mismatch"), std::string::npos) << e.what();
    }
  }
  c.barrier();
}

}  // namespace burst::testing
