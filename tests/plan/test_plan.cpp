// The cost model (burst/plan.h): the sanity of its predictions, its bytes as the registry's,
// ring-rsa running out of memory, the recommendation, the cluster "this" from a calibration,
// and the measurements on this machine. Its byte formulas are the strategy registry's, held to
// the communicators' counters in tests/algo; the command's flags and files are tests/cli's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "burst/error.h"
#include "burst/layout.h"
#include "burst/local_world.h"
#include "burst/plan.h"
#include "burst/strategy.h"
#include "kernels/detail.h"
#include "plan/steps.h"
#include "../support.h"
#include "../algo/rank_problem.h"

namespace burst {
namespace {

using plan::Cluster;
using plan::ModelShape;
using plan::Prediction;
using plan::Scope;
using plan::Workload;

const plan::Candidate kBurst{algo::Strategy::kBurst}, kBurstDouble{algo::Strategy::kBurst, true},
    kRing{algo::Strategy::kRing}, kRingRsa{algo::Strategy::kRingRsa}, kUlysses{algo::Strategy::kUlysses},
    kUsp{algo::Strategy::kUsp}, kAllGather{algo::Strategy::kAllGather}, kTpV1{algo::Strategy::kTpV1},
    kTpV3{algo::Strategy::kTpV3};

// ---- Predictions ----

Workload first_token(std::int64_t seqlen, bool causal = true) {
  Workload w;
  w.seqlen = seqlen;
  w.causal = causal;
  return w;
}

// The plan's bytes are the registry's (tested against the communicators' counters in
// tests/algo), averaged over the ranks and summed over the layers.
TEST(PlanModel, BytesAreTheRegistrysPerLayer) {
  const Cluster c = plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  Workload w = first_token(32768);
  w.scope = Scope::kCore;
  w.backward = true;
  const auto lengths = algo::shard_lengths(32768, c.ranks(), algo::Layout::kZigzag);
  algo::ProblemShape shape;
  shape.n_heads_q = m.heads;
  shape.n_heads_kv = m.kv_heads;
  shape.head_dim = m.head_dim;
  shape.element_bytes = shape.output_bytes = 2;
  for (const plan::Candidate& ch : {kBurst, kRing, kRingRsa, kUlysses, kAllGather}) {
    SCOPED_TRACE(ch.name());
    const algo::MeanBytes mean = algo::mean_bytes(ch.strategy, shape, lengths, {});
    const double forward = mean.forward, backward = mean.backward;
    const Prediction core = plan::predict(ch, c, m, w);
    EXPECT_DOUBLE_EQ(core.forward_bytes, forward);
    EXPECT_DOUBLE_EQ(core.backward_bytes, backward);
    Workload model = first_token(32768);  // forward only, every layer
    EXPECT_DOUBLE_EQ(plan::predict(ch, c, m, model).forward_bytes, m.layers * forward);
  }
  EXPECT_EQ(plan::predict(kBurst, c, m, first_token(32768)).backward_bytes, 0);
}

TEST(PlanModel, PredictionsGrowWithSequence) {
  for (const std::string cluster : {"8xA100-PCIe", "4x8xA100-RoCE600"})
    for (const std::string model : {"llama2-7b", "llama2-13b"})
      for (bool backward : {false, true}) {
        const Cluster c = plan::cluster_preset(cluster, "test");
        const ModelShape m = plan::model_preset(model, "test");
        for (const plan::Candidate& ch : plan::candidates()) {
          SCOPED_TRACE(cluster + " " + model + " " + ch.name() + (backward ? " backward" : ""));
          Prediction last;
          for (std::int64_t s : {32768, 65536, 131072, 262144, 524288, 1048576}) {
            Workload w = first_token(s);
            w.backward = backward;
            const Prediction p = plan::predict(ch, c, m, w);
            if (!p.infeasible.empty()) break;
            EXPECT_GT(p.forward_seconds, 0);
            EXPECT_EQ(p.backward_seconds > 0, backward);
            EXPECT_GE(p.seconds() + 1e-12, p.compute_seconds);  // communication never makes time negative
            EXPECT_GE(p.exposed_seconds, -1e-9);
            EXPECT_LE(p.exposed_seconds, p.comm_seconds + 1e-9);
            EXPECT_GT(p.memory_bytes, 0);
            if (s > 32768) {
              EXPECT_GT(p.seconds(), last.seconds());
              EXPECT_GE(p.forward_bytes, last.forward_bytes);
              EXPECT_GT(p.memory_bytes, last.memory_bytes);
              // Quadratic attention: doubling the sequence at most quadruples the time.
              EXPECT_LE(p.seconds(), 4.0 * last.seconds() * 1.0001);
            }
            last = p;
          }
        }
      }
}

TEST(PlanModel, FasterHardwareNeverSlower) {
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  for (const plan::Candidate& ch : plan::candidates()) {
    Cluster slow = plan::cluster_preset("4x8xA100-RoCE600", "test");
    Cluster fast_link = slow, fast_compute = slow;
    fast_link.inter.bandwidth *= 4;
    fast_link.intra.bandwidth *= 4;
    fast_compute.attention_forward_flops *= 2;
    fast_compute.attention_backward_flops *= 2;
    fast_compute.gemm_flops *= 2;
    fast_compute.memory_bandwidth *= 2;
    Workload w = first_token(131072);
    w.backward = true;
    const Prediction a = plan::predict(ch, slow, m, w);
    if (!a.infeasible.empty()) continue;
    SCOPED_TRACE(ch.name());
    EXPECT_LE(plan::predict(ch, fast_link, m, w).seconds(), a.seconds());
    EXPECT_LT(plan::predict(ch, fast_compute, m, w).seconds(), a.seconds());
    // The causal mask halves the attention FLOPs (ring-rsa materialises every score anyway).
    Workload full = w;
    full.causal = false;
    if (ch == kRingRsa) {
      EXPECT_NEAR(plan::predict(ch, slow, m, full).compute_seconds, a.compute_seconds, 1e-9 * a.compute_seconds);
    } else {
      EXPECT_GT(plan::predict(ch, slow, m, full).compute_seconds, a.compute_seconds);
    }
  }
}

// The double ring hides the slow inter-node hop behind the intra-node steps: on a fast
// intra-node link with slow links between nodes and a NIC per rank it beats the single ring
// (same bytes).
TEST(PlanModel, DoubleRingHidesTheInterNodeHop) {
  Cluster c = plan::cluster_preset("4x8xA100-RoCE600", "test");
  c.inter.bandwidth /= 8;
  c.nics_per_node = 8;  // the node's 600 Gb/s as eight NICs, one per GPU
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  const Prediction single = plan::predict(kBurst, c, m, first_token(131072));
  const Prediction dbl = plan::predict(kBurstDouble, c, m, first_token(131072));
  EXPECT_DOUBLE_EQ(single.forward_bytes, dbl.forward_bytes);
  EXPECT_LT(dbl.seconds(), single.seconds());
  EXPECT_LT(dbl.exposed_seconds, single.exposed_seconds);
  EXPECT_LT(dbl.inter_bytes, single.forward_bytes);
  // On one node it is not offered.
  EXPECT_FALSE(plan::predict(kBurstDouble, plan::cluster_preset("8xA100-PCIe", "t"), m,
                                  first_token(32768))
                   .infeasible.empty());
}

// NICs shared by a node's ranks: a single ring crosses from one rank per node and gets a
// whole NIC; the double ring crosses from all of them at once and gets a share, so with one
// NIC per node it loses its edge (docs/emulation.md).
TEST(PlanModel, SharedNicsSplitAmongTheRanksThatCross) {
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  Cluster one = plan::cluster_preset("4x8xA100-RoCE600", "test");  // one NIC per node
  one.inter.bandwidth = 2e9;  // slow enough that the inter-node hops show
  Cluster eight = one;
  eight.nics_per_node = 8;
  eight.inter.bandwidth = one.inter.bandwidth / 8;  // the same rate per node, a NIC per rank
  const Workload w = first_token(262144);
  // A single ring's one crossing flow: a whole NIC beats an eighth of one.
  EXPECT_LT(plan::predict(kBurst, one, m, w).seconds(), plan::predict(kBurst, eight, m, w).seconds());
  // The double ring's eight flows share the one NIC: the same rate per flow either way.
  EXPECT_NEAR(plan::predict(kBurstDouble, one, m, w).seconds(), plan::predict(kBurstDouble, eight, m, w).seconds(),
              1e-9 * plan::predict(kBurstDouble, one, m, w).seconds());
  // Without NICs per node (0) `inter` is every rank's own link.
  Cluster own = one;
  own.nics_per_node = 0;
  EXPECT_LT(plan::predict(kBurstDouble, own, m, w).seconds(), plan::predict(kBurstDouble, one, m, w).seconds());
}

// USP's Ulysses degree as a choice: usp:U names it, and with_ulysses_degrees offers every
// degree from 2 to P / 2 that divides the ranks and both head counts.
TEST(PlanCandidates, UlyssesDegreesAreChoices) {
  const plan::Candidate u4 = plan::parse_candidate("usp:4", "--strategy");
  EXPECT_EQ(u4.ulysses_degree, 4);
  EXPECT_EQ(u4.name(), "usp:4");
  EXPECT_THROW(plan::parse_candidate("usp:1", "--strategy"), Error);
  EXPECT_THROW(plan::parse_candidate("usp:x", "--strategy"), Error);
  const Cluster c = plan::cluster_preset("4x8xA100-RoCE600", "test");  // 32 ranks
  ModelShape m = plan::model_preset("llama2-7b", "test");             // 32 heads
  m.kv_heads = 8;
  std::vector<std::string> names;
  for (const plan::Candidate& cand : plan::with_ulysses_degrees({kBurst, kUsp}, m, c)) names.push_back(cand.name());
  EXPECT_EQ(names, (std::vector<std::string>{"burst", "usp:2", "usp:4", "usp:8"}));
  // An explicit degree is predicted as given, and differs from another degree's prediction.
  const Prediction p4 = plan::predict(u4, c, m, first_token(131072));
  const Prediction p2 = plan::predict(plan::parse_candidate("usp:2", "t"), c, m, first_token(131072));
  EXPECT_TRUE(p4.runs() && p2.runs());
  EXPECT_NE(p4.forward_bytes, p2.forward_bytes);
}

// ---- Layouts: the rings' work step by step ----

// Visible pairs between every two shards, counted one pair at a time from the library's own
// shard positions: what pair_work computes from runs and closed forms.
std::vector<double> brute_pairs(algo::Layout layout, std::int64_t n, int p, const kernels::MaskSpec& mask) {
  const auto plan = algo::shard_plan(n, p, layout);
  std::vector<double> out;
  for (int i = 0; i < p; ++i) {
    for (int j = 0; j < p; ++j) {
      double pairs = 0;
      for (std::int64_t q : plan[static_cast<std::size_t>(i)])
        for (std::int64_t k : plan[static_cast<std::size_t>(j)]) pairs += mask.visible(q, k) ? 1 : 0;
      out.push_back(pairs);
    }
  }
  return out;
}

kernels::MaskSpec mask_of(bool causal, std::int64_t left = -1, std::int64_t right = -1) {
  kernels::MaskSpec m;
  m.causal = causal;
  m.window_left = left;
  m.window_right = right;
  return m;
}

TEST(PlanSteps, PairWorkCountsEveryVisiblePair) {
  for (algo::Layout layout : plan::planned_layouts()) {
    for (int p : {1, 2, 3, 4, 8}) {
      for (std::int64_t n : {std::int64_t{p}, std::int64_t{2 * p - 1}, std::int64_t{2 * p}, std::int64_t{37},
                             std::int64_t{64}, std::int64_t{203}}) {
        if (n < p) continue;
        for (bool causal : {false, true}) {
          SCOPED_TRACE(algo::layout_name(layout) + " P=" + std::to_string(p) + " N=" + std::to_string(n) +
                       (causal ? " causal" : ""));
          const plan::PairWork w = plan::pair_work(layout, n, p, causal);
          EXPECT_EQ(w.pairs, brute_pairs(layout, n, p, mask_of(causal)));
          const auto nd = static_cast<double>(n);
          EXPECT_DOUBLE_EQ(w.total(), causal ? nd * (nd + 1) / 2 : nd * nd);
          // Sliding windows: one-sided, two-sided, wider than the sequence, empty sides.
          for (auto [left, right] : {std::pair<std::int64_t, std::int64_t>{5, 0}, {5, -1}, {0, 3}, {3, 7}, {-1, 2}, {500, 500}}) {
            SCOPED_TRACE("window " + std::to_string(left) + "," + std::to_string(right));
            const kernels::MaskSpec mask = mask_of(causal, left, right);
            EXPECT_EQ(plan::pair_work(layout, n, p, mask).pairs, brute_pairs(layout, n, p, mask));
          }
        }
      }
    }
  }
  EXPECT_THROW(plan::pair_work(algo::Layout::kBalanced, 64, 4, true), Error);
}

// Partially masked tiles between every two shards, classified one tile at a time by the
// kernels' own classify on the position bounds of blocks of the library's shard positions:
// what partial_tiles finds by binary search.
std::vector<double> brute_partial_tiles(algo::Layout layout, std::int64_t n, int p, const kernels::MaskSpec& mask, int rows,
                                        int cols) {
  const auto plan = algo::shard_plan(n, p, layout);
  auto bounds = [](const std::vector<std::int64_t>& positions, int block) {
    std::vector<std::pair<std::int64_t, std::int64_t>> b;
    for (std::size_t first = 0; first < positions.size(); first += static_cast<std::size_t>(block)) {
      const std::size_t last = std::min(positions.size(), first + static_cast<std::size_t>(block)) - 1;
      b.emplace_back(*std::min_element(positions.begin() + static_cast<std::ptrdiff_t>(first), positions.begin() + static_cast<std::ptrdiff_t>(last) + 1),
                     *std::max_element(positions.begin() + static_cast<std::ptrdiff_t>(first), positions.begin() + static_cast<std::ptrdiff_t>(last) + 1));
    }
    return b;
  };
  std::vector<double> out;
  for (int i = 0; i < p; ++i) {
    for (int j = 0; j < p; ++j) {
      double partial = 0;
      for (auto [q_lo, q_hi] : bounds(plan[static_cast<std::size_t>(i)], rows))
        for (auto [k_lo, k_hi] : bounds(plan[static_cast<std::size_t>(j)], cols))
          partial += kernels::detail::classify(mask, q_lo, q_hi, k_lo, k_hi) == kernels::detail::TileVisibility::kPartial;
      out.push_back(partial);
    }
  }
  return out;
}

TEST(PlanSteps, PartialTilesAreTheKernelsMaskedTiles) {
  for (algo::Layout layout : plan::planned_layouts()) {
    for (int p : {1, 2, 3, 4}) {
      for (std::int64_t n : {std::int64_t{37}, std::int64_t{64}, std::int64_t{203}}) {
        for (auto [rows, cols] : {std::pair{4, 4}, {8, 4}, {5, 7}, {300, 300}}) {
          for (auto [causal, left, right] : {std::tuple<bool, std::int64_t, std::int64_t>{true, -1, -1}, {false, -1, -1},
                                             {true, 9, -1}, {false, 3, 11}, {false, -1, 0}, {true, 500, 500}}) {
            SCOPED_TRACE(algo::layout_name(layout) + " P=" + std::to_string(p) + " N=" + std::to_string(n) + " tile " +
                         std::to_string(rows) + "x" + std::to_string(cols) + (causal ? " causal" : "") + " window " +
                         std::to_string(left) + "," + std::to_string(right));
            const kernels::MaskSpec mask = mask_of(causal, left, right);
            EXPECT_EQ(plan::partial_tiles(layout, n, p, mask, rows, cols).pairs,
                      brute_partial_tiles(layout, n, p, mask, rows, cols));
          }
        }
      }
    }
  }
  // A causal square of N tokens in T x T tiles: its N / T diagonal tiles.
  EXPECT_EQ(plan::partial_tiles(algo::Layout::kContiguous, 4096, 1, mask_of(true), 256, 256).total(), 16);
  const plan::PairWork visible = plan::pair_work(algo::Layout::kZigzag, 512, 2, true);
  const plan::PairWork partial = plan::partial_tiles(algo::Layout::kZigzag, 512, 2, mask_of(true), 64, 64);
  const plan::PairWork weighted = plan::tile_weighted(visible, partial, 1000);
  for (std::size_t i = 0; i < visible.pairs.size(); ++i)
    EXPECT_EQ(weighted.pairs[i], visible.pairs[i] + 1000 * partial.pairs[i]);
}

// A ring step waits for its busiest rank. Causal, P ranks of c tokens: the contiguous
// layout's last rank computes a full c x c block at every step after the first (its
// triangle); zigzag's half-chunks give every rank 2 (c/2)^2 pairs at each step, the mean.
TEST(PlanSteps, RingStepsTakeTheBusiestRank) {
  constexpr int p = 4;
  constexpr std::int64_t c = 64, n = p * c;
  using plan::Travelling;
  for (Travelling t : {Travelling::kKeys, Travelling::kQueries}) {
    const std::vector<double> contiguous = plan::ring_steps(plan::pair_work(algo::Layout::kContiguous, n, p, true), t);
    EXPECT_EQ(contiguous, (std::vector<double>{c * (c + 1) / 2.0, c * c, c * c, c * c}));
    const plan::PairWork zz = plan::pair_work(algo::Layout::kZigzag, n, p, true);
    const std::vector<double> zigzag = plan::ring_steps(zz, t);
    EXPECT_EQ(zigzag.front(), 2.0 * (c / 2) * (c / 2) + c / 2);  // a full chunk pair and two triangles
    for (std::size_t s = 1; s < zigzag.size(); ++s) EXPECT_EQ(zigzag[s], 2.0 * (c / 2) * (c / 2));
    EXPECT_DOUBLE_EQ(std::accumulate(zigzag.begin(), zigzag.end(), 0.0), zz.total() / p);  // balanced
    // The double ring visits the same pairs in another order: balanced zigzag steps stay so.
    double sum = 0;
    for (const auto& cycle : plan::double_ring_steps(zz, 2, 2, t)) sum += std::accumulate(cycle.begin(), cycle.end(), 0.0);
    EXPECT_DOUBLE_EQ(sum, zz.total() / p);
  }
  // USP's groups of 2 over the 4 ranks: two groups of 2c tokens; a member computes half the
  // two groups' pairs (half the heads). Contiguous: group 1 against itself and group 0.
  const std::vector<double> groups = plan::ring_steps(
      plan::group_work(plan::pair_work(algo::Layout::kContiguous, n, p, true), 2), plan::Travelling::kKeys);
  EXPECT_EQ(groups, (std::vector<double>{(2 * c) * (2 * c + 1) / 2.0, (2 * c) * (2 * c)}));
  // How far shards travel, causal contiguous: origin j's keys are needed by the ranks after
  // it (P - 1 - j hops); its queries by the ranks before it, which lie past the wrap (the
  // last is rank j - 1, P - 1 hops; origin 0's queries need only its own keys).
  const plan::PairWork ct = plan::pair_work(algo::Layout::kContiguous, n, p, true);
  EXPECT_EQ(plan::last_steps(ct, plan::Travelling::kKeys), (std::vector<int>{3, 2, 1, 0}));
  EXPECT_EQ(plan::last_steps(ct, plan::Travelling::kQueries), (std::vector<int>{0, 3, 3, 3}));
  EXPECT_EQ(plan::last_steps(plan::pair_work(algo::Layout::kZigzag, n, p, true), plan::Travelling::kKeys),
            (std::vector<int>{3, 3, 3, 3}));
  // All-gather's busiest rank: the last contiguous shard sees every earlier key.
  EXPECT_EQ(plan::busiest_rank(plan::pair_work(algo::Layout::kContiguous, n, p, true)), (p - 1) * c * c + c * (c + 1) / 2.0);
}

// The planner's bytes under every layout are what the rings send: a causal contiguous shard
// stops where no later rank needs it. 4 in-process ranks, every sending ring strategy.
TEST(PlanSteps, RingBytesAreWhatRunsSend) {
  constexpr int kRanks = 4;
  constexpr std::int64_t kSeq = 72, kHeads = 4, kDim = 8;
  const Cluster c = plan::resize(plan::cluster_preset("8xA100-PCIe", "test"), 1, kRanks, "test");
  ModelShape m;
  m.heads = m.kv_heads = kHeads;
  m.head_dim = kDim;
  m.model_dim = kHeads * kDim;
  for (std::int64_t window : {-1, 9}) {  // causal, and a causal window of 10 keys
  Workload w = plan::make_workload(1, true, true, Scope::kCore, DType::kF32);
  w.window_left = window;
  for (algo::Layout layout : plan::planned_layouts()) {
    for (plan::Candidate cand : {kBurst, kRing, plan::parse_candidate("usp:2", "t")}) {
      cand.layout = layout;
      SCOPED_TRACE(cand.name() + " window " + std::to_string(window));
      std::vector<double> forward(kRanks), backward(kRanks);
      comm::run_local_ranks(kRanks, [&](comm::Communicator& comm) {
        algo::StrategyOptions o;
        o.seqlen = kSeq;
        o.layout = layout;
        o.mask = w.mask();
        o.ulysses_degree = cand.ulysses_degree;
        const std::int64_t n = algo::shard_lengths(kSeq, kRanks, layout)[static_cast<std::size_t>(comm.rank())];
        testing::RankProblem shards(n, kHeads, kDim, comm.rank());
        const auto f = shards.forward(cand.strategy, comm, o);
        const auto b = shards.backward(cand.strategy, comm, o);
        forward[static_cast<std::size_t>(comm.rank())] = static_cast<double>(f.bytes_sent);
        backward[static_cast<std::size_t>(comm.rank())] = static_cast<double>(b.bytes_sent);
      });
      const double f_mean = std::accumulate(forward.begin(), forward.end(), 0.0) / kRanks,
                   b_mean = std::accumulate(backward.begin(), backward.end(), 0.0) / kRanks;
      Workload at = w;
      at.seqlen = kSeq;
      const Prediction p = plan::predict(cand, c, m, at);
      EXPECT_NEAR(p.forward_bytes, f_mean, 1e-9 * f_mean);
      EXPECT_NEAR(p.backward_bytes, b_mean, 1e-9 * b_mean);
    }
  }
  }
}

// The layout as a choice: burst@striped names it; under a causal mask with_layouts offers
// every modelled layout of the strategies whose work depends on it, and the planner predicts
// contiguous shards near twice as slow as zigzag (compute-bound); without a mask they agree.
TEST(PlanCandidates, LayoutsAreChoices) {
  const plan::Candidate striped = plan::parse_candidate("burst@striped", "--strategy");
  EXPECT_EQ(striped.layout, algo::Layout::kStriped);
  EXPECT_EQ(striped.name(), "burst@striped");
  EXPECT_EQ(plan::parse_candidate("usp:2@contiguous", "t").name(), "usp:2@contiguous");
  EXPECT_EQ(plan::parse_candidate("burst-double@striped", "t").name(), "burst-double@striped");
  for (const char* bad : {"ulysses@striped", "burst@balanced", "burst@", "tp-v3@zigzag"}) {
    try {
      plan::parse_candidate(bad, "--strategy");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      std::string named = "--strategy: '";
      named += bad;
      named += '\'';
      EXPECT_NE(std::string(e.what()).find(named), std::string::npos) << e.what();
    }
  }
  std::vector<std::string> names;
  for (const plan::Candidate& cand : plan::with_layouts({kBurst, kUlysses, kAllGather}, true)) names.push_back(cand.name());
  EXPECT_EQ(names, (std::vector<std::string>{"burst", "burst@striped", "burst@contiguous", "ulysses", "allgather",
                                             "allgather@striped", "allgather@contiguous"}));
  EXPECT_EQ(plan::with_layouts({kBurst, kUlysses}, false).size(), 2u);

  const Cluster c = plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  const Workload w = first_token(262144);  // compute-bound on this cluster
  plan::Candidate contiguous = kBurst;
  contiguous.layout = algo::Layout::kContiguous;
  const Prediction zz = plan::predict(kBurst, c, m, w), st = plan::predict(striped, c, m, w),
                   ct = plan::predict(contiguous, c, m, w);
  // A contiguous shard stops at the last rank (its keys are needed by no later one): half
  // the K/V sends of a full circle.
  EXPECT_DOUBLE_EQ(ct.forward_bytes, zz.forward_bytes / 2);
  EXPECT_NEAR(st.forward_seconds / zz.forward_seconds, 1.0, 0.01);
  EXPECT_GT(ct.forward_seconds / zz.forward_seconds, 1.6);
  const Workload full = first_token(262144, false);
  EXPECT_DOUBLE_EQ(plan::predict(contiguous, c, m, full).seconds(), plan::predict(kBurst, c, m, full).seconds());
  // Ranked together, a contiguous layout is never the recommendation under a causal mask.
  const std::vector<plan::Row> rows =
      plan::predict_all(c, m, w, {65536, 262144}, plan::with_layouts(plan::candidates(), true));
  for (const plan::Row& row : rows) {
    ASSERT_GE(row.best, 0);
    EXPECT_NE(row.predictions[static_cast<std::size_t>(row.best)].candidate.layout, algo::Layout::kContiguous);
  }
  // A causal sliding window of 4K keys at 256K: a contiguous shard's keys are needed by the
  // next rank only, so they stop after one hop (the last rank's make none: 1/P of a full
  // circle), where most of zigzag's go round (each rank holds a chunk next to the previous
  // rank's); contiguous is burst's fastest layout.
  Workload window = w;
  window.window_left = 4095;
  const Prediction wz = plan::predict(kBurst, c, m, window), wc = plan::predict(contiguous, c, m, window);
  EXPECT_NEAR(wc.forward_bytes, zz.forward_bytes / c.ranks(), 1e-6 * wc.forward_bytes);
  EXPECT_LT(wc.forward_bytes, wz.forward_bytes);
  EXPECT_LT(wc.forward_seconds, wz.forward_seconds);
  EXPECT_LT(wc.forward_seconds, plan::predict(striped, c, m, window).forward_seconds);
}

TEST(PlanModel, RingRsaRunsOutOfMemoryFirst) {
  const Cluster c = plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  // The paper's table: RingAttention runs at 32K and is out of memory from 64K on, while
  // BurstAttention and TP-V3 run up to 256K.
  EXPECT_FALSE(plan::predict(kRingRsa, c, m, first_token(32768)).out_of_memory);
  for (std::int64_t s : {65536, 131072, 262144}) {
    EXPECT_TRUE(plan::predict(kRingRsa, c, m, first_token(s)).out_of_memory) << s;
    EXPECT_FALSE(plan::predict(kBurst, c, m, first_token(s)).out_of_memory) << s;
    EXPECT_FALSE(plan::predict(kTpV3, c, m, first_token(s)).out_of_memory) << s;
  }
  // Its score rows alone: b h (N / P) N fp32.
  const Prediction p = plan::predict(kRingRsa, c, m, first_token(65536));
  EXPECT_GT(p.memory_bytes, 32.0 * 8192 * 65536 * 4);
}

TEST(PlanModel, PaperTrendBurstBeatsTpV3) {
  const Cluster c = plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  for (std::int64_t s : {32768, 65536, 131072, 262144}) {
    const Prediction burst = plan::predict(kBurst, c, m, first_token(s));
    const Prediction tp = plan::predict(kTpV3, c, m, first_token(s));
    EXPECT_LT(burst.seconds(), tp.seconds()) << s;
  }
}

TEST(PlanRecommend, FastestThatRunsTiesByBytes) {
  auto make = [](const plan::Candidate& ch, double seconds, double bytes, bool oom = false, std::string why = "") {
    Prediction p;
    p.candidate = ch;
    p.forward_seconds = seconds;
    p.forward_bytes = bytes;
    p.out_of_memory = oom;
    p.infeasible = std::move(why);
    return p;
  };
  std::vector<Prediction> ps = {make(kRingRsa, 1.0, 10, true), make(kUlysses, 0.5, 10, false, "heads"),
                                make(kTpV3, 3.0, 5), make(kBurst, 2.0, 20)};
  EXPECT_EQ(plan::recommend(ps), 3);
  ps.push_back(make(kRing, 2.001, 15));  // within 0.5%: fewer bytes wins
  EXPECT_EQ(plan::recommend(ps), 4);
  ps.push_back(make(kAllGather, 1.5, 100));
  EXPECT_EQ(plan::recommend(ps), 5);
  EXPECT_EQ(plan::recommend({make(kRingRsa, 1.0, 1, true)}), -1);
  EXPECT_EQ(plan::recommend({}), -1);
}

TEST(PlanRecommend, PresetsRecommendSequenceParallelismForLongSequences) {
  const ModelShape m = plan::model_preset("llama2-7b", "test");
  for (const std::string cluster : {"8xA100-PCIe", "4x8xA100-RoCE600"}) {
    const Cluster c = plan::cluster_preset(cluster, "test");
    std::vector<Prediction> ps;
    for (const plan::Candidate& ch : plan::candidates()) ps.push_back(plan::predict(ch, c, m, first_token(262144)));
    const int best = plan::recommend(ps);
    ASSERT_GE(best, 0);
    const plan::Candidate chosen = ps[static_cast<std::size_t>(best)].candidate;
    EXPECT_NE(chosen.name(), kRingRsa.name()) << cluster;
    EXPECT_NE(chosen.name(), kTpV1.name()) << cluster;
    for (const Prediction& p : ps)
      if (p.runs()) {
        EXPECT_LE(ps[static_cast<std::size_t>(best)].seconds(), p.seconds() * 1.005) << cluster;
      }
  }
}

TEST(PlanModel, ThisMachineFromCalibration) {
  // Two cores, in-process ranks (no overlap); causal rates not measured (0: the full ones).
  plan::Calibration cal;
  cal.cores = 2;
  cal.memory_bytes = 16e9;
  cal.attention_forward_f32 = cal.gemm_f32 = 80e9;
  cal.attention_backward_f32 = 60e9;
  cal.memory_bandwidth = 10e9;
  cal.link_backend = "local";
  cal.link_bandwidth = 5e9;
  cal.link_latency = 30e-6;
  const Cluster two = plan::cluster_from_calibration(cal, 2, DType::kF32);
  const Cluster four = plan::cluster_from_calibration(cal, 4, DType::kF32);
  EXPECT_FALSE(two.overlap);
  EXPECT_DOUBLE_EQ(two.rank_share(), 1.0);   // one core each
  EXPECT_DOUBLE_EQ(four.rank_share(), 0.5);  // four ranks on two cores
  // A core shared by two rank threads gives what the calibration measured it gives; ranks
  // with a core each are untouched.
  cal.shared_core_efficiency = 0.8;
  EXPECT_DOUBLE_EQ(plan::cluster_from_calibration(cal, 4, DType::kF32).rank_share(), 0.4);
  EXPECT_DOUBLE_EQ(plan::cluster_from_calibration(cal, 2, DType::kF32).rank_share(), 1.0);
  cal.shared_core_efficiency = 0;  // older files: nothing lost
  // Attention core, one head of 8K: compute = 4 h N^2 d / P / rate.
  ModelShape m;
  m.name = "custom";
  m.heads = m.kv_heads = 1;
  m.head_dim = 128;
  m.model_dim = 128;
  Workload w;
  w.scope = Scope::kCore;
  w.seqlen = 8192;
  w.element_bytes = w.output_bytes = 4;
  const Prediction p = plan::predict(kBurst, two, m, w);
  EXPECT_NEAR(p.compute_seconds, 4.0 * 8192 * 8192 * 128 / 2 / 80e9, 1e-9);
  EXPECT_GT(p.forward_seconds, p.compute_seconds);  // no overlap: the transfer adds
  // Causal problems take the causal rates when calibrated, the full ones otherwise.
  w.causal = true;
  const double causal_flops = 4.0 * 8192 * 8192 * 128 * (8193.0 / 16384) / 2;
  EXPECT_NEAR(plan::predict(kBurst, two, m, w).compute_seconds, causal_flops / 80e9, 1e-9);
  Cluster measured = two;
  measured.attention_forward_flops_causal = 40e9;
  measured.attention_backward_flops_causal = 30e9;
  EXPECT_NEAR(plan::predict(kBurst, measured, m, w).compute_seconds, causal_flops / 40e9, 1e-9);
  // A calibration with causal rates gives the tile model: full tiles at the full rate, and
  // each partially masked tile what the causal problem took beyond its visible pairs. Its own
  // problem (one call over kernel_tokens, as Ulysses makes on 2 ranks of 2 heads) comes out at
  // its causal rate.
  cal.attention_forward_f32_causal = 40e9;
  cal.attention_backward_f32_causal = 30e9;
  cal.kernel_tokens = 4096;
  cal.tile_rows = cal.tile_cols = 256;
  const Cluster tiled = plan::cluster_from_calibration(cal, 2, DType::kF32);
  EXPECT_EQ(tiled.tile_rows, 256);
  const double visible = 4096.0 * 4097 / 2;  // pairs, 16 partially masked tiles among them
  EXPECT_NEAR(tiled.masked_tile_forward, visible * (80e9 / 40e9 - 1) / 16, 1e-6);
  EXPECT_NEAR(tiled.masked_tile_backward, visible * (60e9 / 30e9 - 1) / 16, 1e-6);
  ModelShape two_heads = m;
  two_heads.heads = two_heads.kv_heads = 2;
  two_heads.model_dim = 256;
  Workload own = w;
  own.seqlen = 4096;
  EXPECT_NEAR(plan::predict(kUlysses, tiled, two_heads, own).compute_seconds, 4.0 * 128 * visible / 40e9, 1e-9);
  // Burst on zigzag shards of 8K: the diagonal tiles of step 0 cost extra, the full blocks of
  // step 1 only their pairs at the full rate, so the prediction lies between the two rates'.
  const double tiled_burst = plan::predict(kBurst, tiled, m, w).compute_seconds;
  EXPECT_GT(tiled_burst, causal_flops / 80e9);
  EXPECT_LT(tiled_burst, causal_flops / 40e9);
  cal.attention_forward_f32_causal = cal.attention_backward_f32_causal = 0;
  // A cluster at half speed: every compute rate halved, the links and the tiles' extra kept.
  const Cluster half = plan::at_speed(tiled, 0.5);
  EXPECT_DOUBLE_EQ(half.attention_forward_flops, 40e9);
  EXPECT_DOUBLE_EQ(half.attention_backward_flops_causal, 15e9);
  EXPECT_DOUBLE_EQ(half.gemm_flops, 40e9);
  EXPECT_DOUBLE_EQ(half.intra.bandwidth, tiled.intra.bandwidth);
  EXPECT_DOUBLE_EQ(half.masked_tile_forward, tiled.masked_tile_forward);
  EXPECT_NEAR(plan::predict(kUlysses, half, two_heads, own).compute_seconds, 4.0 * 128 * visible / 20e9, 1e-9);
  EXPECT_THROW(plan::at_speed(tiled, 0), Error);

  // ring-rsa: its measured rates give its compute, full FLOPs (it skips nothing), forward and
  // backward; unmeasured, its GEMMs at the GEMM rate plus score passes at the memory bandwidth.
  w.causal = false;
  w.backward = true;
  const double full = 4.0 * 8192 * 8192 * 128 / 2;
  const Prediction modelled = plan::predict(kRingRsa, two, m, w);
  EXPECT_GT(modelled.compute_seconds, 3.5 * full / 80e9);  // GEMMs alone, both passes
  cal.ring_rsa_forward_f32 = 20e9;
  cal.ring_rsa_backward_f32 = 10e9;
  const Cluster rsa_measured = plan::cluster_from_calibration(cal, 2, DType::kF32);
  const Prediction p_rsa = plan::predict(kRingRsa, rsa_measured, m, w);
  EXPECT_NEAR(p_rsa.compute_seconds, full / 20e9 + 2.5 * full / 10e9, 1e-6);
  // bf16 inputs: ring-rsa's scores are fp32 either way, so the same rates serve.
  EXPECT_DOUBLE_EQ(plan::cluster_from_calibration(cal, 2, DType::kBF16).ring_rsa_forward_flops, 20e9);
}

TEST(PlanCandidates, NamesRoundTripAndUnknownsListThem) {
  for (const plan::Candidate& c : plan::candidates()) EXPECT_EQ(plan::parse_candidate(c.name(), "--strategy"), c);
  EXPECT_EQ(kBurstDouble.name(), "burst-double");
  try {
    plan::parse_candidate("fast", "--strategy");
    ADD_FAILURE() << "an unknown name was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("--strategy: expected burst|burst-double|ring|", 0), 0u) << e.what();
  }
}

// The measurements themselves, small: a link between two thread ranks, and the memory reader.
TEST(PlanCalibration, MeasuresALinkBetweenTwoRanks) {
  plan::Calibration c;
  comm::run_local_ranks(2, [&](comm::Communicator& comm) {
    plan::Calibration mine;
    plan::measure_link(comm, mine);
    if (comm.rank() == 0) c = mine;
  });
  EXPECT_EQ(c.link_backend, "local");
  EXPECT_GT(c.link_bandwidth, 0);
  EXPECT_GT(c.link_latency, 0);
  EXPECT_GE(plan::available_memory(), 0);
}

}  // namespace
}  // namespace burst
