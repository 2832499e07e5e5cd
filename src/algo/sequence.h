// Collectives over the sequence-sharded rows of the attention layer and the transformer
// block (tensor parallelism with sequence parallelism), and the timing of such collectives.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "burst/communicator.h"
#include "burst/tensor.h"

namespace burst::algo::detail {

// Bytes `comm` has sent so far, every operation kind together.
std::uint64_t total_sent(const comm::Communicator& comm);

// Runs fn (one collective on comm) and adds the bytes it sent and the seconds it took.
template <class Fn>
void collective(comm::Communicator& comm, std::uint64_t& bytes, double& seconds, Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t before = total_sent(comm);
  fn();
  bytes += total_sent(comm) - before;
  seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Every rank's rows [b, n_p, 1, D] (this rank's: `shard`, rank p's tokens plan[p]) into
// `global` [b, N, 1, D] in token order: an all-gather of unequal shards.
void gather_sequence(comm::Communicator& comm, const TensorView& shard,
                     const std::vector<std::vector<std::int64_t>>& plan, const TensorView& global);

// shard = the sum over ranks (in rank order) of their global[:, plan[rank]] rows: a
// reduce-scatter of unequal shards.
void reduce_scatter_sequence(comm::Communicator& comm, const TensorView& global,
                             const std::vector<std::vector<std::int64_t>>& plan, const TensorView& shard);

}  // namespace burst::algo::detail
