#include "burst_suite.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <mutex>

#include "../support.h"

namespace burst::testing {
namespace {

using algo::BackwardScheme;
using algo::Layout;

constexpr std::int64_t kBatch = 2, kHeadsKv = 2, kHeadDim = 16;


// The global problem and its double reference, built once per process per problem.
struct Global {
  Tensor q, k, v, dout;
  reference::ForwardResult fwd;
  reference::BackwardResult bwd;
  double single_out_error = 0, single_grad_error = 0;  // the one-rank kernels' errors
  GradientFloors floors{};
};

const Global& global_problem(const BurstCase& bc) {
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<Global>> cache;
  const std::string key = std::to_string(static_cast<int>(bc.mask)) + "/" + std::to_string(bc.group) + "/" +
                          std::to_string(bc.seqlen) + "/" + std::string(dtype_name(bc.dtype)) + "/" +
                          std::to_string(static_cast<int>(bc.docs));
  std::lock_guard lock(mutex);
  auto& slot = cache[key];
  if (slot) return *slot;
  auto g = std::make_unique<Global>();
  const std::int64_t hq = kHeadsKv * bc.group;
  g->q = random_tensor(bc.dtype, kBatch, bc.seqlen, hq, kHeadDim, 101);
  g->k = random_tensor(bc.dtype, kBatch, bc.seqlen, kHeadsKv, kHeadDim, 102);
  g->v = random_tensor(bc.dtype, kBatch, bc.seqlen, kHeadsKv, kHeadDim, 103);
  g->dout = random_tensor(bc.dtype, kBatch, bc.seqlen, hq, kHeadDim, 104);
  kernels::AttentionOptions opt;
  opt.mask = bc.mask_spec();
  g->fwd = reference::forward(g->q.view(), g->k.view(), g->v.view(), opt);
  g->bwd = reference::backward(g->q.view(), g->k.view(), g->v.view(), g->dout.view(), opt);
  g->floors = gradient_floors(g->q.view(), g->k.view(), g->v.view(), g->dout.view(), 1.0 / std::sqrt(double{kHeadDim}));
  // The single-rank kernels on the whole problem: the error the ring must stay within 2x of.
  ForwardOutputs f = attention_forward(g->q.view(), g->k.view(), g->v.view(), opt, DType::kF32);
  Gradients gr = attention_backward(g->q.view(), g->k.view(), g->v.view(), f.out.view(), f.lse.view(), g->dout.view(), opt);
  g->single_out_error = relative_error(f.out.view(), g->fwd.out);
  g->single_grad_error = std::max({relative_error(gr.dq.view(), g->bwd.dq, g->floors.dq),
                                   relative_error(gr.dk.view(), g->bwd.dk, g->floors.dk),
                                   relative_error(gr.dv.view(), g->bwd.dv, g->floors.dv)});
  slot = std::move(g);
  return *slot;
}

// max |shard row - reference row| over this shard, over max |reference| of the whole tensor.
double shard_error(const TensorView& shard, const std::vector<double>& ref, const std::vector<std::int64_t>& pos,
                   std::int64_t n_global, double floor) {
  double scale = floor, diff = 0;
  for (double x : ref) scale = std::max(scale, std::fabs(x));
  for (std::int64_t ib = 0; ib < shard.b; ++ib)
    for (std::size_t i = 0; i < pos.size(); ++i)
      for (std::int64_t ih = 0; ih < shard.h; ++ih)
        for (std::int64_t x = 0; x < shard.d; ++x) {
          const double got = reference::element(shard, ib, static_cast<std::int64_t>(i), ih, x);
          const double want = ref[static_cast<std::size_t>(((ib * n_global + pos[i]) * shard.h + ih) * shard.d + x)];
          if (!std::isfinite(got)) return std::numeric_limits<double>::infinity();
          diff = std::max(diff, std::fabs(got - want));
        }
  return diff / scale;
}

double shard_lse_error(const RowStatsView& lse, const std::vector<double>& ref, const std::vector<std::int64_t>& pos,
                       std::int64_t n_global) {
  double err = 0;
  for (std::int64_t ib = 0; ib < lse.b; ++ib)
    for (std::int64_t ih = 0; ih < lse.h; ++ih)
      for (std::size_t i = 0; i < pos.size(); ++i) {
        const double got = lse.row(ib, ih)[i];
        const double want = ref[static_cast<std::size_t>((ib * lse.h + ih) * n_global + pos[i])];
        if (std::isinf(want) || !std::isfinite(got)) {
          if (!(got == want)) return std::numeric_limits<double>::infinity();
          continue;
        }
        err = std::max(err, std::fabs(got - want) / (1 + std::fabs(want)));
      }
  return err;
}

// Ring steps and bytes of burst and ring on a single ring, from the shards' positions alone:
// meets[i][j] says whether some query of rank i sees some key of rank j (by MaskSpec::visible,
// pair by pair). A travelling shard goes as far as the last rank that needs it; the forward
// sends K/V of origin j at steps t < last(j); the backward its bundle likewise and its
// accumulator at every step t <= last(j) (the last one straight home) when last(j) > 0.
void check_ring_skips(comm::Communicator& c, const BurstCase& bc, const kernels::MaskSpec& mask,
                      const std::vector<std::vector<std::int64_t>>& plan, std::int64_t hq,
                      const algo::StrategyStats& fs, const algo::StrategyStats& bs) {
  const int p = c.world_size(), r = c.rank();
  auto meets = [&](int i, int j) {
    for (std::int64_t qp : plan[static_cast<std::size_t>(i)])
      for (std::int64_t kp : plan[static_cast<std::size_t>(j)])
        if (mask.visible(qp, kp)) return true;
    return false;
  };
  auto last = [&](int j, bool queries_travel) {
    for (int t = p - 1; t > 0; --t) {
      const int i = (j + t) % p;
      if (queries_travel ? meets(j, i) : meets(i, j)) return t;
    }
    return 0;
  };
  const std::size_t e = dtype_size(bc.dtype);
  auto n_of = [&](int j) { return static_cast<std::uint64_t>(plan[static_cast<std::size_t>(j)].size()); };
  const bool queries_travel = bs.scheme == BackwardScheme::kQuery;
  std::uint64_t forward = 0, backward = 0;
  int skipped = 0, skipped_backward = 0;
  for (int t = 0; t < p; ++t) {
    const int j = (r - t + p) % p;
    skipped += meets(r, j) ? 0 : 1;
    skipped_backward += (queries_travel ? meets(j, r) : meets(r, j)) ? 0 : 1;
    const std::uint64_t kv = 2 * kBatch * n_of(j) * kHeadsKv * kHeadDim * e;
    if (t + 1 < p && t < last(j, false)) forward += kv;
    const int lb = last(j, queries_travel);
    const std::uint64_t bundle = queries_travel ? 2 * kBatch * n_of(j) * hq * kHeadDim * e + 2 * kBatch * hq * n_of(j) * 4 : kv;
    const std::uint64_t acc = (queries_travel ? kBatch * n_of(j) * hq * kHeadDim : 2 * kBatch * n_of(j) * kHeadsKv * kHeadDim) *
                              dtype_size(bc.gradient_wire);
    if (t + 1 < p && t < lb) backward += bundle;
    if (t <= lb && lb > 0) backward += acc;
  }
  if (bc.docs == DocKind::kTiny && bc.layout == Layout::kBalanced && p >= 3) {
    // Tiny documents on contiguous shards meet only the next rank's keys: most steps and
    // sends are skipped (so the formula above is not vacuous).
    EXPECT_GE(skipped, p - 2);
    EXPECT_GT(fs.bytes_saved, 0u);
    EXPECT_GT(bs.bytes_saved, 0u);
  }
  EXPECT_EQ(fs.steps_skipped, skipped) << "forward steps skipped";
  EXPECT_EQ(fs.steps_computed, p - skipped) << "forward steps computed";
  EXPECT_EQ(bs.steps_skipped, skipped_backward) << "backward steps skipped";
  EXPECT_EQ(bs.steps_computed, p - skipped_backward) << "backward steps computed";
  EXPECT_EQ(fs.bytes_sent, forward) << "forward bytes";
  EXPECT_EQ(bs.bytes_sent, backward) << "backward bytes";
}

}  // namespace

std::span<const std::int64_t> documents_of(DocKind docs, std::int64_t seqlen) {
  if (docs == DocKind::kNone) return {};
  static std::mutex mutex;
  static std::map<std::pair<int, std::int64_t>, std::vector<std::int64_t>> cache;
  std::lock_guard lock(mutex);
  std::vector<std::int64_t>& c = cache[{static_cast<int>(docs), seqlen}];
  if (!c.empty()) return c;
  std::vector<std::int64_t> lengths;
  switch (docs) {
    case DocKind::kMixed: {
      lengths = {1, 2, 37, 1, 3};
      const std::int64_t rest = seqlen - 44;
      lengths.push_back(rest / 2);
      lengths.push_back(rest - rest / 2);
      break;
    }
    case DocKind::kTiny:
      for (std::int64_t total = 0, i = 0; total < seqlen; ++i) {
        lengths.push_back(std::min(1 + i % 3, seqlen - total));
        total += lengths.back();
      }
      break;
    case DocKind::kSpanning: lengths = {seqlen - 3, 1, 2}; break;
    case DocKind::kNone: break;
  }
  c.push_back(0);
  for (std::int64_t l : lengths) c.push_back(c.back() + l);
  return c;
}

kernels::MaskSpec BurstCase::mask_spec() const {
  kernels::MaskSpec m = mask_of(mask);
  m.documents = documents_of(docs, seqlen);
  return m;
}

kernels::MaskSpec mask_of(MaskKind m) {
  switch (m) {
    case MaskKind::kNone: return {};
    case MaskKind::kCausal: return {true, -1, -1, {}};
    case MaskKind::kWindow: return {false, 9, 12, {}};
    case MaskKind::kCausalWindow: return {true, 20, -1, {}};
  }
  return {};
}

// "" or "/docs-<kind>" (appended piecewise: GCC 12 misreads "literal" + std::string here).
std::string docs_name(DocKind docs) {
  std::string name;
  if (docs == DocKind::kNone) return name;
  name += "/docs-";
  name += docs == DocKind::kMixed ? "mixed" : docs == DocKind::kTiny ? "tiny" : "spanning";
  return name;
}

std::string BurstCase::describe() const {
  static const char* masks[] = {"none", "causal", "window", "causal+window"};
  return algo::strategy_name(strategy) + "/" + algo::layout_name(layout) + "/" + masks[static_cast<int>(mask)] + "/gqa" + std::to_string(group) +
         "/N" + std::to_string(seqlen) + "/" + algo::scheme_name(scheme) + "/" + std::string(dtype_name(dtype)) +
         (double_ring ? "/double-ring" : "") + (gradient_wire == DType::kBF16 ? "/bf16-wire" : "") +
         (strategy == algo::Strategy::kUsp ? "/U" + std::to_string(ulysses_degree) : "") + docs_name(docs);
}

void check_burst_case(comm::Communicator& c, const BurstCase& bc) {
  SCOPED_TRACE("rank " + std::to_string(c.rank()) + " of " + std::to_string(c.world_size()) + ": " + bc.describe());
  const Global& g = global_problem(bc);
  const std::int64_t hq = kHeadsKv * bc.group, n_global = bc.seqlen;
  const kernels::MaskSpec mask = bc.mask_spec();
  const std::vector<std::vector<std::int64_t>> plan = algo::shard_plan(n_global, c.world_size(), bc.layout, mask);
  const std::vector<std::int64_t>& pos = plan[static_cast<std::size_t>(c.rank())];
  const auto n = static_cast<std::int64_t>(pos.size());
  auto shard_of = [&](const Tensor& global, std::int64_t h) {
    Tensor s(bc.dtype, kBatch, n, h, kHeadDim);
    algo::copy_to_shard(global.view(), pos, s.view());
    return s;
  };
  Tensor q = shard_of(g.q, hq), k = shard_of(g.k, kHeadsKv), v = shard_of(g.v, kHeadsKv), dout = shard_of(g.dout, hq);

  algo::StrategyOptions opt;
  opt.seqlen = n_global;
  opt.layout = bc.layout;
  opt.mask = mask;
  opt.backward_scheme = bc.scheme;
  opt.double_ring = bc.double_ring;
  opt.gradient_wire = bc.gradient_wire;
  opt.ulysses_degree = bc.ulysses_degree;
  opt.block_m = 16;  // several tiles per shard
  opt.block_n = 16;

  Tensor out(DType::kF32, kBatch, n, hq, kHeadDim);
  RowStats lse(kBatch, hq, n);
  out.fill_nan();
  lse.fill_nan();
  const algo::StrategyStats fs =
      algo::strategy_forward(bc.strategy, c, q.view(), k.view(), v.view(), out.view(), lse.view(), opt);
  const double fwd_tol = forward_tolerance(kHeadDim, n_global, g.fwd.max_abs_score);
  const double out_err = shard_error(out.view(), g.fwd.out, pos, n_global, 0.0);
  EXPECT_LE(out_err, fwd_tol) << "out";
  EXPECT_LE(out_err, 2 * std::max(g.single_out_error, 1e-6)) << "out error grew past 2x the one-rank kernel's";
  EXPECT_LE(shard_lse_error(lse.view(), g.fwd.lse, pos, n_global), fwd_tol) << "lse";

  Tensor dq(DType::kF32, kBatch, n, hq, kHeadDim), dk(DType::kF32, kBatch, n, kHeadsKv, kHeadDim),
      dv(DType::kF32, kBatch, n, kHeadsKv, kHeadDim);
  dq.fill_nan();
  dk.fill_nan();
  dv.fill_nan();
  const algo::StrategyStats bs = algo::strategy_backward(bc.strategy, c, q.view(), k.view(), v.view(), out.view(),
                                                     lse.view(), dout.view(), dq.view(), dk.view(), dv.view(), opt);
  // A bf16 wire rounds each partial sum once per hop (2^-9 relative), P hops at most.
  const bool bf16_wire = bc.gradient_wire == DType::kBF16;
  const double bwd_tol = backward_tolerance(kHeadDim, n_global, g.fwd.max_abs_score) +
                         (bf16_wire ? c.world_size() * std::ldexp(1.0, -8) : 0.0);
  const double grad_errs[] = {shard_error(dq.view(), g.bwd.dq, pos, n_global, g.floors.dq),
                              shard_error(dk.view(), g.bwd.dk, pos, n_global, g.floors.dk),
                              shard_error(dv.view(), g.bwd.dv, pos, n_global, g.floors.dv)};
  const char* names[] = {"dq", "dk", "dv"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_LE(grad_errs[i], bwd_tol) << names[i];
    if (!bf16_wire) {
      EXPECT_LE(grad_errs[i], 2 * std::max(g.single_grad_error, 1e-6)) << names[i] << " grew past 2x the one-rank kernel's";
    }
  }

  // Exact bytes: the registry's formula for this rank (burst/strategy.h) against what the
  // communicator counted. The double ring sends P - 1 shards per rank as the ring does, but
  // not always the same ones: exact for equal shards (it spares nothing).
  const int p = c.world_size(), r = c.rank();
  const algo::StrategyInfo& info = algo::strategy_info(bc.strategy);
  algo::ProblemShape shape;
  shape.batch = kBatch;
  shape.n_heads_q = hq;
  shape.n_heads_kv = kHeadsKv;
  shape.head_dim = kHeadDim;
  shape.element_bytes = dtype_size(bc.dtype);
  shape.output_bytes = sizeof(float);  // out is fp32 here
  const algo::StrategyBytes want = info.bytes(shape, algo::shard_lengths(n_global, p, bc.layout, mask), r, opt);
  EXPECT_EQ(want.backward, want.backward_bundle + want.backward_trailing);
  const std::vector<std::int64_t> lengths = algo::shard_lengths(n_global, p, bc.layout, mask);
  if (!bc.double_ring || std::adjacent_find(lengths.begin(), lengths.end(), std::not_equal_to<>()) == lengths.end()) {
    EXPECT_EQ(fs.bytes_sent + fs.bytes_saved, want.forward) << "forward";
    EXPECT_EQ(bs.bytes_sent + bs.bytes_saved, want.backward) << "backward";
  }
  if ((bc.strategy == algo::Strategy::kBurst || bc.strategy == algo::Strategy::kRing) && !bc.double_ring) {
    check_ring_skips(c, bc, mask, plan, hq, fs, bs);
  }
  if (!info.ring_options) return;
  EXPECT_EQ(bs.scheme, want.scheme);
  if (bc.strategy == algo::Strategy::kRing) {
    EXPECT_EQ(bs.scheme, algo::BackwardScheme::kKeyValue);  // RingAttention passes K and V
  } else {
    EXPECT_EQ(bs.scheme, bc.scheme);
  }
  // Without a mask, or causal in a paired layout, every shard is needed everywhere; a
  // causal contiguous ring need not pass the last shards to earlier ranks, and neither need
  // paired layouts of fewer than 2 tokens per rank (a rank's only token may be the last).
  const bool paired = bc.layout == Layout::kZigzag || bc.layout == Layout::kStriped || bc.layout == Layout::kDocZigzag;
  if (!opt.mask.masks_anything() ||
      (bc.mask == MaskKind::kCausal && bc.docs == DocKind::kNone && paired && n_global >= 2 * p) || bc.double_ring) {
    EXPECT_EQ(fs.bytes_saved, 0u);
    EXPECT_EQ(bs.bytes_saved, 0u);
  }
}

void check_burst_bitwise(comm::Communicator& c) {
  BurstCase bc;
  bc.mask = MaskKind::kCausal;
  bc.layout = Layout::kZigzag;
  const Global& g = global_problem(bc);
  const std::int64_t hq = kHeadsKv * bc.group, n_global = bc.seqlen;
  const std::vector<std::int64_t> pos = algo::shard_positions(n_global, c.world_size(), c.rank(), bc.layout);
  const auto n = static_cast<std::int64_t>(pos.size());
  Tensor q(bc.dtype, kBatch, n, hq, kHeadDim), k(bc.dtype, kBatch, n, kHeadsKv, kHeadDim),
      v(bc.dtype, kBatch, n, kHeadsKv, kHeadDim), dout(bc.dtype, kBatch, n, hq, kHeadDim);
  algo::copy_to_shard(g.q.view(), pos, q.view());
  algo::copy_to_shard(g.k.view(), pos, k.view());
  algo::copy_to_shard(g.v.view(), pos, v.view());
  algo::copy_to_shard(g.dout.view(), pos, dout.view());
  algo::BurstOptions opt;
  opt.seqlen = n_global;
  opt.layout = bc.layout;
  opt.mask = mask_of(bc.mask);
  auto run = [&] {
    ForwardOutputs f{Tensor(DType::kF32, kBatch, n, hq, kHeadDim), RowStats(kBatch, hq, n)};
    algo::burst_forward(c, q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), opt);
    Gradients gr{Tensor(DType::kF32, kBatch, n, hq, kHeadDim), Tensor(DType::kF32, kBatch, n, kHeadsKv, kHeadDim),
                 Tensor(DType::kF32, kBatch, n, kHeadsKv, kHeadDim)};
    algo::burst_backward(c, q.view(), k.view(), v.view(), f.out.view(), f.lse.view(), dout.view(), gr.dq.view(),
                         gr.dk.view(), gr.dv.view(), opt);
    return std::pair{std::move(f), std::move(gr)};
  };
  const auto [f1, g1] = run();
  const auto [f2, g2] = run();
  EXPECT_TRUE(bitwise_equal(f1.out.view(), f2.out.view()));
  EXPECT_TRUE(bitwise_equal(f1.lse.view(), f2.lse.view()));
  EXPECT_TRUE(bitwise_equal(g1.dq.view(), g2.dq.view()));
  EXPECT_TRUE(bitwise_equal(g1.dk.view(), g2.dk.view()));
  EXPECT_TRUE(bitwise_equal(g1.dv.view(), g2.dv.view()));
  if (c.world_size() == 1) {  // the ring of one rank is the local kernel, bit for bit
    kernels::AttentionOptions kopt;
    kopt.mask = opt.mask;
    const ForwardOutputs local = attention_forward(q.view(), k.view(), v.view(), kopt, DType::kF32);
    const Gradients lg = attention_backward(q.view(), k.view(), v.view(), local.out.view(), local.lse.view(), dout.view(), kopt);
    EXPECT_TRUE(bitwise_equal(f1.out.view(), local.out.view()));
    EXPECT_TRUE(bitwise_equal(f1.lse.view(), local.lse.view()));
    EXPECT_TRUE(bitwise_equal(g1.dq.view(), lg.dq.view()));
    EXPECT_TRUE(bitwise_equal(g1.dk.view(), lg.dk.view()));
    EXPECT_TRUE(bitwise_equal(g1.dv.view(), lg.dv.view()));
  }
}

void check_burst_disagreement(comm::Communicator& c) {
  if (c.world_size() < 2) return;
  const std::int64_t d = c.rank() == 1 ? 8 : 16;  // rank 1 disagrees on head_dim
  const std::vector<std::int64_t> pos = algo::shard_positions(64, c.world_size(), c.rank(), Layout::kContiguous);
  const auto n = static_cast<std::int64_t>(pos.size());
  Tensor q = random_tensor(DType::kF32, 1, n, 2, d, 1), k = random_tensor(DType::kF32, 1, n, 2, d, 2);
  Tensor out(DType::kF32, 1, n, 2, d);
  RowStats lse(1, 2, n);
  algo::BurstOptions opt;
  opt.seqlen = 64;
  try {
    algo::burst_forward(c, q.view(), k.view(), k.view(), out.view(), lse.view(), opt);
    ADD_FAILURE() << "no error on rank " << c.rank();
  } catch (const comm::CommError& e) {  // a communication failure (exit status 3), not bad input
    EXPECT_NE(std::string(e.what()).find("ranks disagree: rank 1 has head_dim 8 but rank 0 has 16"), std::string::npos)
        << e.what();
  }
  // Values are named as people read them: a scale as a number, a layout by name.
  Tensor q16 = random_tensor(DType::kF32, 1, n, 2, 16, 1), k16 = random_tensor(DType::kF32, 1, n, 2, 16, 2);
  Tensor out16(DType::kF32, 1, n, 2, 16);
  const struct {
    void (*set)(algo::BurstOptions&, bool odd);
    const char* message;
  } cases[] = {
      {[](algo::BurstOptions& o, bool odd) { o.scale = odd ? 0.5f : 0.25f; }, "rank 1 has scale 0.5 but rank 0 has 0.25"},
      {[](algo::BurstOptions& o, bool odd) { o.mask.causal = odd; }, "rank 1 has causal true but rank 0 has false"},
      {[](algo::BurstOptions& o, bool odd) { o.gradient_wire = odd ? DType::kBF16 : DType::kF32; },
       "rank 1 has gradient wire dtype bf16 but rank 0 has fp32"},
  };
  for (const auto& cs : cases) {
    algo::BurstOptions o = opt;
    cs.set(o, c.rank() == 1);
    try {
      algo::burst_forward(c, q16.view(), k16.view(), k16.view(), out16.view(), lse.view(), o);
      ADD_FAILURE() << "no error on rank " << c.rank() << " for " << cs.message;
    } catch (const comm::CommError& e) {
      EXPECT_NE(std::string(e.what()).find(cs.message), std::string::npos) << e.what();
    }
  }
}

}  // namespace burst::testing
