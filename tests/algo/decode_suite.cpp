#include "decode_suite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "burst/layout.h"
#include "../support.h"

namespace burst::testing {
namespace {

constexpr std::int64_t kBatch = 2, kHeadsKv = 4, kHeadDim = 16;

TensorView rows(const Tensor& t, std::int64_t first, std::int64_t n) {
  TensorView v = t.view();
  v.data = v.at(0, first, 0);
  v.s = n;
  return v;
}

}  // namespace

std::string DecodeCase::describe() const {
  return algo::decode_strategy_name(strategy) + "/N" + std::to_string(context) + "/steps" + std::to_string(steps) +
         "x" + std::to_string(chunk) + "/gqa" + std::to_string(group) + "/window" + std::to_string(window) + "/" +
         std::string(dtype_name(dtype)) + "/" + algo::layout_name(layout);
}

void check_decode_case(comm::Communicator& c, const DecodeCase& dc) {
  SCOPED_TRACE("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world_size()) + ": " + dc.describe());
  const std::int64_t hq = kHeadsKv * dc.group, total = dc.context + dc.steps * dc.chunk;
  // Distinct values on every token and head, the same on every rank.
  const Tensor q = random_tensor(dc.dtype, kBatch, total, hq, kHeadDim, 201);
  const Tensor k = random_tensor(dc.dtype, kBatch, total, kHeadsKv, kHeadDim, 202);
  const Tensor v = random_tensor(dc.dtype, kBatch, total, kHeadsKv, kHeadDim, 203);
  kernels::AttentionOptions ref_options;
  ref_options.mask.causal = true;
  ref_options.mask.window_left = dc.window;
  const reference::ForwardResult want = reference::forward(q.view(), k.view(), v.view(), ref_options);
  // The reference reads the same (bf16-rounded) inputs and O stays fp32: fp32's tolerance.
  const double tolerance = forward_tolerance(kHeadDim, total, want.max_abs_score);

  algo::KvCache cache(c, dc.strategy, kBatch, kHeadsKv, kHeadDim, dc.dtype);
  algo::DecodeOptions o;
  o.window_left = dc.window;
  o.threads = 2;
  if (dc.strategy == algo::DecodeStrategy::kTensorParallel) {
    // Prefill onto the empty cache: the whole prompt's heads of this rank.
    Tensor out(DType::kF32, kBatch, dc.context, hq, kHeadDim);
    RowStats lse(kBatch, hq, dc.context);
    out.fill_nan();
    algo::extend(c, cache, rows(q, 0, dc.context), rows(k, 0, dc.context), rows(v, 0, dc.context), out.view(),
                 lse.view(), o);
    EXPECT_LE(relative_error(out.view(), reference::forward_rows(q.view(), k.view(), v.view(), ref_options, [&] {
                std::vector<std::int64_t> r(static_cast<std::size_t>(dc.context));
                for (std::int64_t i = 0; i < dc.context; ++i) r[static_cast<std::size_t>(i)] = i;
                return r;
              }()).out),
              tolerance)
        << "prefill";
  } else {
    algo::BurstOptions bo;
    bo.seqlen = dc.context;
    bo.layout = dc.layout;
    bo.mask = ref_options.mask;
    const auto mine = algo::shard_positions(dc.context, c.world_size(), c.rank(), dc.layout);
    const auto n = static_cast<std::int64_t>(mine.size());
    auto shard = [&](const Tensor& t) {
      Tensor s(dc.dtype, kBatch, n, t.view().h, kHeadDim);
      algo::copy_to_shard(rows(t, 0, dc.context), mine, s.view());
      return s;
    };
    const Tensor qs = shard(q), ks = shard(k), vs = shard(v);
    Tensor out(DType::kF32, kBatch, n, hq, kHeadDim);
    RowStats lse(kBatch, hq, n);
    out.fill_nan();
    algo::prefill(c, cache, qs.view(), ks.view(), vs.view(), out.view(), lse.view(), bo);
    EXPECT_LE(relative_error(out.view(), reference::forward_rows(q.view(), k.view(), v.view(), ref_options, mine).out),
              tolerance)
        << "prefill";
    EXPECT_EQ(cache.local_size(), n);
  }
  EXPECT_EQ(cache.size(), dc.context);
  if (c.rank() == dc.leaving_rank) return;  // lost after the prefill: never answers again

  for (std::int64_t step = 0; step < dc.steps; ++step) {
    const std::int64_t first = dc.context + step * dc.chunk;
    Tensor out(DType::kF32, kBatch, dc.chunk, hq, kHeadDim);
    RowStats lse(kBatch, hq, dc.chunk);
    out.fill_nan();
    lse.fill_nan();
    const algo::DecodeStats st = algo::extend(c, cache, rows(q, first, dc.chunk), rows(k, first, dc.chunk),
                                              rows(v, first, dc.chunk), out.view(), lse.view(), o);
    std::vector<std::int64_t> wanted;
    for (std::int64_t i = 0; i < dc.chunk; ++i) wanted.push_back(first + i);
    const reference::ForwardResult w = reference::forward_rows(q.view(), k.view(), v.view(), ref_options, wanted);
    EXPECT_LE(relative_error(out.view(), w.out), tolerance) << "step " << step;
    for (std::int64_t ib = 0; ib < kBatch; ++ib)
      for (std::int64_t h = 0; h < hq; ++h)
        for (std::int64_t i = 0; i < dc.chunk; ++i)
          EXPECT_LE(reference::lse_error(lse.view().row(ib, h)[i],
                                         w.lse[static_cast<std::size_t>((ib * hq + h) * dc.chunk + i)]),
                    tolerance)
              << "lse, step " << step;
    EXPECT_EQ(st.bytes_sent, algo::extend_bytes(dc.strategy, c.world_size(), c.rank(), kBatch, hq, kHeadsKv, kHeadDim,
                                                dc.chunk, dtype_size(dc.dtype), cache.tokens_per_rank()))
        << "step " << step;
    // burst and tp give every rank bitwise the same result: compare with rank 0's.
    if (dc.strategy != algo::DecodeStrategy::kRing) {
      std::vector<float> first_rank(static_cast<std::size_t>(out.view().numel()));
      if (c.rank() == 0) std::copy_n(out.data<float>(), first_rank.size(), first_rank.begin());
      c.broadcast(first_rank.data(), first_rank.size() * sizeof(float), 0);
      EXPECT_TRUE(std::equal(first_rank.begin(), first_rank.end(), out.data<float>())) << "step " << step;
    }
  }
  EXPECT_EQ(cache.size(), total);
  if (dc.strategy != algo::DecodeStrategy::kTensorParallel) {
    // Balanced: the shards differ by at most the prefill layout's rounding plus one token.
    const auto& counts = cache.tokens_per_rank();
    const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    EXPECT_LE(*hi - *lo, 2) << "shards of " << *lo << " to " << *hi << " tokens";
  }
}

std::uint64_t decode_bytes_with_context(comm::Communicator& c, std::int64_t context) {
  const std::int64_t hq = 8;
  algo::KvCache cache(c, algo::DecodeStrategy::kBurst, 1, kHeadsKv, kHeadDim, DType::kF32, context / c.world_size() + 8);
  // A filled cache without the prefill's attention (only the bytes of decoding matter here).
  const auto mine = algo::shard_positions(context, c.world_size(), c.rank(), algo::Layout::kZigzag);
  const Tensor kv = random_tensor(DType::kF32, 1, static_cast<std::int64_t>(mine.size()), kHeadsKv, kHeadDim, 7);
  cache.append(kv.view(), kv.view(), mine, 0);
  for (int r = 0; r < c.world_size(); ++r)
    if (r != c.rank())
      cache.count(r, static_cast<std::int64_t>(algo::shard_positions(context, c.world_size(), r, algo::Layout::kZigzag).size()));
  const Tensor q = random_tensor(DType::kF32, 1, 3, hq, kHeadDim, 8), k = random_tensor(DType::kF32, 1, 3, kHeadsKv, kHeadDim, 9);
  std::uint64_t bytes = 0;
  for (std::int64_t step = 0; step < 3; ++step) {
    Tensor out(DType::kF32, 1, 1, hq, kHeadDim);
    RowStats lse(1, hq, 1);
    const algo::DecodeStats st =
        algo::extend(c, cache, rows(q, step, 1), rows(k, step, 1), rows(k, step, 1), out.view(), lse.view(), {});
    EXPECT_EQ(st.bytes_sent, algo::extend_bytes(algo::DecodeStrategy::kBurst, c.world_size(), c.rank(), 1, hq, kHeadsKv,
                                                kHeadDim, 1, 4, cache.tokens_per_rank()));
    EXPECT_FALSE(std::isnan(out.data<float>()[0]));
    bytes = st.bytes_sent;
  }
  return bytes;
}

}  // namespace burst::testing
