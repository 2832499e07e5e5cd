// One rank's shards of an fp32 attention problem for tests of bytes, schedules and timing,
// where the values do not matter: random q, k, v and dO seeded from the rank, outputs filled
// with NaN, and a registry strategy's forward and backward on them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

#include "../support.h"
#include "burst/strategy.h"

namespace burst::testing {

struct RankProblem {
  Tensor q, k, v, dout, out, dq, dk, dv;
  RowStats lse;

  // [1, n, heads, dim] shards of rank `rank`.
  RankProblem(std::int64_t n, std::int64_t heads, std::int64_t dim, int rank)
      : q(random_tensor(DType::kF32, 1, n, heads, dim, seed(rank, 1))),
        k(random_tensor(DType::kF32, 1, n, heads, dim, seed(rank, 2))),
        v(random_tensor(DType::kF32, 1, n, heads, dim, seed(rank, 3))),
        dout(random_tensor(DType::kF32, 1, n, heads, dim, seed(rank, 4))),
        out(DType::kF32, 1, n, heads, dim),
        dq(DType::kF32, 1, n, heads, dim),
        dk(DType::kF32, 1, n, heads, dim),
        dv(DType::kF32, 1, n, heads, dim),
        lse(1, heads, n) {
    for (Tensor* t : {&out, &dq, &dk, &dv}) {
      float* x = static_cast<float*>(t->view().data);
      std::fill(x, x + t->view().numel(), std::numeric_limits<float>::quiet_NaN());
    }
  }

  algo::StrategyStats forward(algo::Strategy strategy, comm::Communicator& comm, const algo::StrategyOptions& o) {
    return algo::strategy_forward(strategy, comm, q.view(), k.view(), v.view(), out.view(), lse.view(), o);
  }
  algo::StrategyStats backward(algo::Strategy strategy, comm::Communicator& comm, const algo::StrategyOptions& o) {
    return algo::strategy_backward(strategy, comm, q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(),
                                   dq.view(), dk.view(), dv.view(), o);
  }

 private:
  static std::uint64_t seed(int rank, int which) { return 10 * static_cast<std::uint64_t>(rank) + static_cast<std::uint64_t>(which); }
};

}  // namespace burst::testing
