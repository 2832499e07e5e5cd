// Internals shared by the distributed algorithms: the shard plan with the ranks' up-front
// agreement check, kernel options, and traffic accounting.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "burst/burst_attention.h"

namespace burst::algo::detail {

struct Plan {
  std::vector<std::vector<std::int64_t>> positions;  // every rank's tokens
  std::vector<std::int64_t> lengths;
};

// Gathers one signature (shapes, dtype, layout, mask, scale, and the strategy's own
// `settings`) from every rank and checks every rank against rank 0 and against the layout's
// shard lengths: a disagreement fails on all ranks with the same message. Returns the shard
// plan.
Plan check_and_plan(comm::Communicator& comm, const TensorView& q, const TensorView& k,
                    const TensorView& v, const DistributedOptions& options,
                    std::span<const comm::Setting> settings = {});
// BurstAttention's ring settings as check_and_plan compares them.
std::vector<comm::Setting> ring_settings(const RingOptions& options);

// Checks the backward's tensors against q and k: dout like q (same dtype), out like q, and
// dq, dk, dv fp32 shaped like q, k, k.
void check_backward_tensors(const TensorView& q, const TensorView& k, const TensorView& out,
                            const TensorView& dout, const TensorView& dq, const TensorView& dk,
                            const TensorView& dv);

// The local kernels' options for one rank: mask, scale, threads, ISA, tile, and the progress
// hook that keeps the communicator's transfers moving between tiles.
kernels::AttentionOptions kernel_options(const DistributedOptions& options, comm::Communicator& comm);

// Traffic totals of a communicator per operation kind at one moment (take it after
// check_and_plan, whose all-gather is not the algorithm's traffic).
struct TrafficMark {
  std::array<std::uint64_t, comm::kOpCount> sent{}, received{};
};
TrafficMark mark_traffic(const comm::Communicator& comm);
// Adds the bytes `comm` moved since `mark` in the operation kinds `ops` to stats.
void add_traffic_since(const comm::Communicator& comm, const TrafficMark& mark,
                       std::initializer_list<comm::Op> ops, StrategyStats& stats);

}  // namespace burst::algo::detail
