// burst plan's cost model: its byte formulas against the library's own traffic counters on
// in-process ranks (exact equality), the sanity of its predictions, ring-rsa running out of
// memory, the recommendation, and the command's flag errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "burst/layer.h"
#include "burst/layout.h"
#include "burst/linear.h"
#include "burst/strategy.h"
#include "burst/npy.h"
#include "burst/local_world.h"
#include "burst/error.h"
#include "memory.h"
#include "plan.h"
#include "plan_calibrate.h"
#include "plan_model.h"

namespace burst {
namespace {

using plan_choice = cli::plan::Choice;
using cli::plan::Cluster;
using cli::plan::CoreShape;
using cli::plan::ModelShape;
using cli::plan::Prediction;
using cli::plan::Scope;
using cli::plan::Workload;

void fill(const TensorView& t, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const auto n = static_cast<std::size_t>(t.numel());
  if (t.dtype == DType::kF32) {
    for (std::size_t i = 0; i < n; ++i) static_cast<float*>(t.data)[i] = dist(rng);
  } else {
    for (std::size_t i = 0; i < n; ++i) static_cast<bf16_bits*>(t.data)[i] = float_to_bf16(dist(rng));
  }
}

std::vector<std::int64_t> lengths_of(const std::vector<std::vector<std::int64_t>>& plan) {
  std::vector<std::int64_t> out;
  for (const auto& p : plan) out.push_back(static_cast<std::int64_t>(p.size()));
  return out;
}

struct CoreCase {
  plan_choice choice = plan_choice::kBurst;
  int ranks = 2;
  std::int64_t seqlen = 96, heads = 4, kv_heads = 4, head_dim = 16;
  bool causal = false;
  DType dtype = DType::kF32;
  int ulysses_degree = 1;
  int ranks_per_node = 0;  // > 0: pretend nodes (double ring)
};

std::string describe(const CoreCase& c) {
  return cli::plan::choice_name(c.choice) + " P=" + std::to_string(c.ranks) + " N=" + std::to_string(c.seqlen) +
         " heads " + std::to_string(c.heads) + "/" + std::to_string(c.kv_heads) + (c.causal ? " causal" : "") +
         (c.dtype == DType::kBF16 ? " bf16" : " fp32");
}

// Runs the strategy's forward and backward on thread ranks; every rank compares its counted
// bytes with the model's.
void check_core(const CoreCase& cc) {
  SCOPED_TRACE(describe(cc));
  const algo::Layout layout = cc.causal ? algo::Layout::kZigzag : algo::Layout::kContiguous;
  const auto plan = algo::shard_plan(cc.seqlen, cc.ranks, layout);
  const std::vector<std::int64_t> lengths = lengths_of(plan);
  if (cc.ranks_per_node > 0) setenv("BURST_RANKS_PER_NODE", std::to_string(cc.ranks_per_node).c_str(), 1);
  comm::run_local_ranks(cc.ranks, [&](comm::Communicator& c) {
    const int r = c.rank();
    const std::int64_t n = lengths[static_cast<std::size_t>(r)];
    Tensor q(cc.dtype, 1, n, cc.heads, cc.head_dim), k(cc.dtype, 1, n, cc.kv_heads, cc.head_dim),
        v(cc.dtype, 1, n, cc.kv_heads, cc.head_dim), dout(cc.dtype, 1, n, cc.heads, cc.head_dim);
    fill(q.view(), 10 + static_cast<std::uint64_t>(r));
    fill(k.view(), 20 + static_cast<std::uint64_t>(r));
    fill(v.view(), 30 + static_cast<std::uint64_t>(r));
    fill(dout.view(), 40 + static_cast<std::uint64_t>(r));
    Tensor out(cc.dtype, 1, n, cc.heads, cc.head_dim);
    RowStats lse(1, cc.heads, n);
    Tensor dq(DType::kF32, 1, n, cc.heads, cc.head_dim), dk(DType::kF32, 1, n, cc.kv_heads, cc.head_dim),
        dv(DType::kF32, 1, n, cc.kv_heads, cc.head_dim);
    algo::BurstOptions o;
    o.seqlen = cc.seqlen;
    o.layout = layout;
    o.mask.causal = cc.causal;
    o.ulysses_degree = cc.ulysses_degree;
    o.double_ring = cc.choice == plan_choice::kBurstDouble;
    const algo::Strategy s = cli::plan::library_strategy(cc.choice);
    const algo::RingStats fs = algo::strategy_forward(s, c, q.view(), k.view(), v.view(), out.view(), lse.view(), o);
    const algo::RingStats bs = algo::strategy_backward(s, c, q.view(), k.view(), v.view(), out.view(), lse.view(),
                                                       dout.view(), dq.view(), dk.view(), dv.view(), o);
    const CoreShape shape{1, cc.heads, cc.kv_heads, cc.head_dim, dtype_size(cc.dtype), dtype_size(cc.dtype),
                          cc.ulysses_degree};
    const cli::plan::CoreBytes model = cli::plan::core_bytes(cc.choice, lengths, r, shape);
    EXPECT_EQ(fs.bytes_saved, 0u) << "rank " << r;
    EXPECT_EQ(fs.bytes_sent, model.forward) << "rank " << r << " forward";
    EXPECT_EQ(bs.bytes_sent, model.backward) << "rank " << r << " backward";
    EXPECT_EQ(model.backward, model.backward_bundle + model.backward_trailing);
    if (cc.choice == plan_choice::kBurst || cc.choice == plan_choice::kRing) {
      EXPECT_EQ(bs.scheme, model.scheme);
    }
  });
  if (cc.ranks_per_node > 0) unsetenv("BURST_RANKS_PER_NODE");
}

TEST(PlanBytes, CoreMatchesLibraryCounters) {
  int cases = 0;
  for (plan_choice choice : {plan_choice::kBurst, plan_choice::kRing, plan_choice::kRingRsa, plan_choice::kAllGather,
                             plan_choice::kUlysses, plan_choice::kUsp})
    for (int ranks : {1, 2, 3, 4})
      for (std::int64_t seqlen : {96, 101})
        for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}})
          for (bool causal : {false, true})
            for (DType dtype : {DType::kF32, DType::kBF16}) {
              CoreCase cc;
              cc.choice = choice;
              cc.ranks = ranks;
              cc.seqlen = seqlen;
              cc.heads = heads;
              cc.kv_heads = kv_heads;
              cc.causal = causal;
              cc.dtype = dtype;
              if (choice == plan_choice::kUlysses && (heads % ranks != 0 || kv_heads % ranks != 0)) continue;
              if (choice == plan_choice::kUsp) {
                if (ranks % 2 != 0) continue;
                cc.ulysses_degree = 2;
              }
              check_core(cc);
              ++cases;
            }
  EXPECT_GT(cases, 300);
}

TEST(PlanBytes, DoubleRingMatchesLibraryCounters) {
  for (auto [ranks, per_node] : {std::pair<int, int>{4, 2}, {6, 3}, {6, 2}})
    for (bool causal : {false, true}) {
      CoreCase cc;
      cc.choice = plan_choice::kBurstDouble;
      cc.ranks = ranks;
      cc.ranks_per_node = per_node;
      cc.seqlen = 96;  // equal shards: the double ring's per-rank bytes are the ring's
      cc.causal = causal;
      check_core(cc);
    }
}

// The planner's per-rank backward, averaged over ranks, is the library's own formula.
TEST(PlanBytes, BackwardAgreesWithBackwardBytes) {
  for (int ranks : {2, 4, 8})
    for (std::int64_t kv : {8, 2}) {
      const auto lengths = lengths_of(algo::shard_plan(4096, ranks, algo::Layout::kZigzag));
      const CoreShape shape{2, 8, kv, 64, 2, 2, 1};
      const auto scheme = algo::choose_scheme(lengths, 2, 8, kv, 64, 2);
      const cli::plan::CoreBytes cb = cli::plan::core_bytes(plan_choice::kBurst, lengths, 0, shape);
      EXPECT_EQ(cb.scheme, scheme);
      EXPECT_EQ(cb.backward, algo::backward_bytes(scheme, lengths, 2, 8, kv, 64, 2));
      EXPECT_EQ(scheme, kv == 8 ? algo::BackwardScheme::kQuery : algo::BackwardScheme::kKeyValue);
    }
}

// The whole layer: attention core plus the layer's collectives and the weight gradients.
void check_layer(plan_choice choice, int ranks, std::int64_t seqlen, std::int64_t heads, std::int64_t kv_heads) {
  SCOPED_TRACE(cli::plan::choice_name(choice) + " P=" + std::to_string(ranks) + " N=" + std::to_string(seqlen) +
               " heads " + std::to_string(heads) + "/" + std::to_string(kv_heads));
  const algo::LayerShape shape{24, heads, kv_heads, 8};
  const auto lengths = lengths_of(algo::shard_plan(seqlen, ranks, algo::Layout::kZigzag));
  const algo::Parameters full = algo::random_parameters(shape, 7);
  comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
    algo::LayerOptions o;
    o.strategy = cli::plan::library_strategy(choice);
    o.attention.seqlen = seqlen;
    o.attention.layout = algo::Layout::kZigzag;
    o.attention.mask.causal = true;
    algo::AttentionLayer layer(c, shape, o);
    const bool tp = algo::layer_only(o.strategy);
    const algo::Parameters own = tp ? algo::shard_parameters(full, shape, layer.heads()) : algo::Parameters();
    const algo::Parameters& params = tp ? own : full;
    algo::Parameters grads(shape.model_dim, layer.heads().q_count, layer.heads().kv_count, shape.head_dim);
    Tensor x(DType::kF32, 1, layer.rows(), 1, shape.model_dim), y(DType::kF32, 1, layer.rows(), 1, shape.model_dim),
        dy(DType::kF32, 1, layer.rows(), 1, shape.model_dim), dx(DType::kF32, 1, layer.rows(), 1, shape.model_dim);
    fill(x.view(), 50 + static_cast<std::uint64_t>(c.rank()));
    fill(dy.view(), 60 + static_cast<std::uint64_t>(c.rank()));
    const algo::LayerStats fs = layer.forward(params, x.view(), y.view());
    const algo::LayerStats bs = layer.backward(params, dy.view(), dx.view(), grads);
    const cli::plan::LayerBytes model = cli::plan::layer_bytes(choice, shape, 1, lengths, c.rank(), sizeof(float));
    EXPECT_EQ(fs.bytes_sent(), model.forward) << "rank " << c.rank();
    EXPECT_EQ(bs.bytes_sent(), model.backward + model.grads) << "rank " << c.rank();
  });
}

TEST(PlanBytes, LayerMatchesLibraryCounters) {
  for (plan_choice choice : {plan_choice::kBurst, plan_choice::kRing, plan_choice::kRingRsa, plan_choice::kAllGather,
                             plan_choice::kUlysses, plan_choice::kTpV1, plan_choice::kTpV3})
    for (int ranks : {1, 2, 3, 4})
      for (auto [heads, kv_heads] : {std::pair<std::int64_t, std::int64_t>{4, 4}, {4, 2}}) {
        const bool splits = heads % ranks == 0 && (kv_heads % ranks == 0 || ranks % kv_heads == 0);
        if ((choice == plan_choice::kUlysses && (heads % ranks != 0 || kv_heads % ranks != 0)) ||
            ((choice == plan_choice::kTpV1 || choice == plan_choice::kTpV3) && !splits))
          continue;
        check_layer(choice, ranks, 50, heads, kv_heads);
      }
}

// ---- Predictions ----

Workload first_token(std::int64_t seqlen, bool causal = true) {
  Workload w;
  w.seqlen = seqlen;
  w.causal = causal;
  return w;
}

TEST(PlanModel, BurstForwardBytesAreTheRingFormula) {
  const Cluster c = cli::plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  const Prediction p = cli::plan::predict(plan_choice::kBurst, c, m, first_token(32768));
  // 2 N G d e (P - 1) / P per layer, 32 layers.
  EXPECT_DOUBLE_EQ(p.forward_bytes, 32.0 * 2 * 32768 * 32 * 128 * 2 * 7 / 8);
  EXPECT_EQ(p.backward_bytes, 0);
}

TEST(PlanModel, PredictionsGrowWithSequence) {
  for (const std::string cluster : {"8xA100-PCIe", "4x8xA100-RoCE600"})
    for (const std::string model : {"llama2-7b", "llama2-13b"})
      for (bool backward : {false, true}) {
        const Cluster c = cli::plan::cluster_preset(cluster, "test");
        const ModelShape m = cli::plan::model_preset(model, "test");
        for (plan_choice ch : cli::plan::all_choices()) {
          SCOPED_TRACE(cluster + " " + model + " " + cli::plan::choice_name(ch) + (backward ? " backward" : ""));
          Prediction last;
          for (std::int64_t s : {32768, 65536, 131072, 262144, 524288, 1048576}) {
            Workload w = first_token(s);
            w.backward = backward;
            const Prediction p = cli::plan::predict(ch, c, m, w);
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
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  for (plan_choice ch : cli::plan::all_choices()) {
    Cluster slow = cli::plan::cluster_preset("4x8xA100-RoCE600", "test");
    Cluster fast_link = slow, fast_compute = slow;
    fast_link.inter.bandwidth *= 4;
    fast_link.intra.bandwidth *= 4;
    fast_compute.attention_forward_flops *= 2;
    fast_compute.attention_backward_flops *= 2;
    fast_compute.gemm_flops *= 2;
    fast_compute.memory_bandwidth *= 2;
    Workload w = first_token(131072);
    w.backward = true;
    const Prediction a = cli::plan::predict(ch, slow, m, w);
    if (!a.infeasible.empty()) continue;
    SCOPED_TRACE(cli::plan::choice_name(ch));
    EXPECT_LE(cli::plan::predict(ch, fast_link, m, w).seconds(), a.seconds());
    EXPECT_LT(cli::plan::predict(ch, fast_compute, m, w).seconds(), a.seconds());
    // The causal mask halves the attention FLOPs (ring-rsa materialises every score anyway).
    Workload full = w;
    full.causal = false;
    if (ch == plan_choice::kRingRsa) {
      EXPECT_NEAR(cli::plan::predict(ch, slow, m, full).compute_seconds, a.compute_seconds, 1e-9 * a.compute_seconds);
    } else {
      EXPECT_GT(cli::plan::predict(ch, slow, m, full).compute_seconds, a.compute_seconds);
    }
  }
}

// The double ring hides the slow inter-node hop behind the intra-node steps: on a fast
// intra-node link with slow links between nodes it beats the single ring (same bytes).
TEST(PlanModel, DoubleRingHidesTheInterNodeHop) {
  const Cluster c = cli::plan::cluster_preset("4x8xA100-RoCE600", "test");
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  const Prediction single = cli::plan::predict(plan_choice::kBurst, c, m, first_token(131072));
  const Prediction dbl = cli::plan::predict(plan_choice::kBurstDouble, c, m, first_token(131072));
  EXPECT_DOUBLE_EQ(single.forward_bytes, dbl.forward_bytes);
  EXPECT_LT(dbl.seconds(), single.seconds());
  EXPECT_LT(dbl.exposed_seconds, single.exposed_seconds);
  EXPECT_LT(dbl.inter_bytes, single.forward_bytes);
  // On one node it is not offered.
  EXPECT_FALSE(cli::plan::predict(plan_choice::kBurstDouble, cli::plan::cluster_preset("8xA100-PCIe", "t"), m,
                                  first_token(32768))
                   .infeasible.empty());
}

TEST(PlanModel, RingRsaRunsOutOfMemoryFirst) {
  const Cluster c = cli::plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  // The paper's table: RingAttention runs at 32K and is out of memory from 64K on, while
  // BurstAttention and TP-V3 run up to 256K.
  EXPECT_FALSE(cli::plan::predict(plan_choice::kRingRsa, c, m, first_token(32768)).out_of_memory);
  for (std::int64_t s : {65536, 131072, 262144}) {
    EXPECT_TRUE(cli::plan::predict(plan_choice::kRingRsa, c, m, first_token(s)).out_of_memory) << s;
    EXPECT_FALSE(cli::plan::predict(plan_choice::kBurst, c, m, first_token(s)).out_of_memory) << s;
    EXPECT_FALSE(cli::plan::predict(plan_choice::kTpV3, c, m, first_token(s)).out_of_memory) << s;
  }
  // Its score rows alone: b h (N / P) N fp32.
  const Prediction p = cli::plan::predict(plan_choice::kRingRsa, c, m, first_token(65536));
  EXPECT_GT(p.memory_bytes, 32.0 * 8192 * 65536 * 4);
}

TEST(PlanModel, PaperTrendBurstBeatsTpV3) {
  const Cluster c = cli::plan::cluster_preset("8xA100-PCIe", "test");
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  for (std::int64_t s : {32768, 65536, 131072, 262144}) {
    const Prediction burst = cli::plan::predict(plan_choice::kBurst, c, m, first_token(s));
    const Prediction tp = cli::plan::predict(plan_choice::kTpV3, c, m, first_token(s));
    EXPECT_LT(burst.seconds(), tp.seconds()) << s;
  }
}

TEST(PlanRecommend, FastestThatRunsTiesByBytes) {
  auto make = [](plan_choice ch, double seconds, double bytes, bool oom = false, std::string why = "") {
    Prediction p;
    p.choice = ch;
    p.forward_seconds = seconds;
    p.forward_bytes = bytes;
    p.out_of_memory = oom;
    p.infeasible = std::move(why);
    return p;
  };
  std::vector<Prediction> ps = {make(plan_choice::kRingRsa, 1.0, 10, true), make(plan_choice::kUlysses, 0.5, 10, false, "heads"),
                                make(plan_choice::kTpV3, 3.0, 5), make(plan_choice::kBurst, 2.0, 20)};
  EXPECT_EQ(cli::plan::recommend(ps), 3);
  ps.push_back(make(plan_choice::kRing, 2.001, 15));  // within 0.5%: fewer bytes wins
  EXPECT_EQ(cli::plan::recommend(ps), 4);
  ps.push_back(make(plan_choice::kAllGather, 1.5, 100));
  EXPECT_EQ(cli::plan::recommend(ps), 5);
  EXPECT_EQ(cli::plan::recommend({make(plan_choice::kRingRsa, 1.0, 1, true)}), -1);
  EXPECT_EQ(cli::plan::recommend({}), -1);
}

TEST(PlanRecommend, PresetsRecommendSequenceParallelismForLongSequences) {
  const ModelShape m = cli::plan::model_preset("llama2-7b", "test");
  for (const std::string cluster : {"8xA100-PCIe", "4x8xA100-RoCE600"}) {
    const Cluster c = cli::plan::cluster_preset(cluster, "test");
    std::vector<Prediction> ps;
    for (plan_choice ch : cli::plan::all_choices()) ps.push_back(cli::plan::predict(ch, c, m, first_token(262144)));
    const int best = cli::plan::recommend(ps);
    ASSERT_GE(best, 0);
    const plan_choice chosen = ps[static_cast<std::size_t>(best)].choice;
    EXPECT_NE(chosen, plan_choice::kRingRsa) << cluster;
    EXPECT_NE(chosen, plan_choice::kTpV1) << cluster;
    for (const Prediction& p : ps)
      if (p.runs()) {
        EXPECT_LE(ps[static_cast<std::size_t>(best)].seconds(), p.seconds() * 1.005) << cluster;
      }
  }
}

TEST(PlanModel, ThisMachineFromCalibration) {
  cli::plan::Calibration cal;
  cal.cores = 2;
  cal.memory_bytes = 16e9;
  cal.attention_forward_f32 = 80e9;
  cal.attention_backward_f32 = 60e9;
  cal.attention_forward_bf16 = 110e9;
  cal.attention_backward_bf16 = 90e9;
  cal.gemm_f32 = 90e9;
  cal.attention_forward_f32_causal = 70e9;
  cal.memory_bandwidth = 10e9;
  cal.link_backend = "local";
  cal.link_bandwidth = 5e9;
  cal.link_latency = 30e-6;
  cal.measured_at = "now";
  const std::string path = ::testing::TempDir() + "/plan_calibration.json";
  cli::plan::save_calibration(path, cal);
  const cli::plan::Calibration back = cli::plan::load_calibration(path, "--cluster this");
  EXPECT_DOUBLE_EQ(back.attention_forward_f32, 80e9);
  EXPECT_DOUBLE_EQ(back.attention_forward_f32_causal, 70e9);
  EXPECT_DOUBLE_EQ(back.attention_backward_f32_causal, 0);
  EXPECT_EQ(back.link_backend, "local");
  const Cluster two = cli::plan::cluster_from_calibration(back, 2, DType::kF32);
  const Cluster four = cli::plan::cluster_from_calibration(back, 4, DType::kF32);
  EXPECT_FALSE(two.overlap);
  EXPECT_DOUBLE_EQ(two.rank_share(), 1.0);   // one core each
  EXPECT_DOUBLE_EQ(four.rank_share(), 0.5);  // four ranks on two cores
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
  const Prediction p = cli::plan::predict(plan_choice::kBurst, two, m, w);
  EXPECT_NEAR(p.compute_seconds, 4.0 * 8192 * 8192 * 128 / 2 / 80e9, 1e-9);
  EXPECT_GT(p.forward_seconds, p.compute_seconds);  // no overlap: the transfer adds
  // Causal problems take the causal rates when calibrated, the full ones otherwise.
  w.causal = true;
  const double causal_flops = 4.0 * 8192 * 8192 * 128 * (8193.0 / 16384) / 2;
  EXPECT_NEAR(cli::plan::predict(plan_choice::kBurst, two, m, w).compute_seconds, causal_flops / 80e9, 1e-9);
  Cluster measured = two;
  measured.attention_forward_flops_causal = 40e9;
  measured.attention_backward_flops_causal = 30e9;
  EXPECT_NEAR(cli::plan::predict(plan_choice::kBurst, measured, m, w).compute_seconds, causal_flops / 40e9, 1e-9);
  EXPECT_THROW(cli::plan::load_calibration(::testing::TempDir() + "/missing.json", "--cluster this"), Error);
}

// ---- The command ----

int plan_main(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return cli::run_plan(std::span<char* const>(argv.data(), argv.size()));
}

void expect_error(std::vector<std::string> args, const std::string& start) {
  try {
    plan_main(std::move(args));
    ADD_FAILURE() << "expected an error starting with " << start;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(start, 0), 0u) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

TEST(PlanCommand, ErrorsNameTheFlag) {
  expect_error({"--seqlen", "32X"}, "--seqlen:");
  expect_error({"--seqlen"}, "--seqlen:");
  expect_error({"--cluster", "9xH100"}, "--cluster:");
  expect_error({"--model", "gpt"}, "--model:");
  expect_error({"--flops", "-3"}, "--flops:");
  expect_error({"--ranks", "0"}, "--ranks:");
  expect_error({"--ranks", "12", "--nodes", "5"}, "--ranks:");
  expect_error({"--strategy", "burst,fast"}, "--strategy:");
  expect_error({"--scope", "all"}, "--scope:");
  expect_error({"--frobnicate"}, "arguments:");
  expect_error({"--causal=yes"}, "--causal:");
  expect_error({"--cluster", "this", "--calibration", "/nonexistent/calibration.json"}, "--cluster this:");
  expect_error({"--model", "custom"}, "--model:");
}

TEST(PlanCommand, RunsPresetsAndWritesJson) {
  testing::internal::CaptureStdout();
  const std::string json = ::testing::TempDir() + "/plan.json";
  EXPECT_EQ(plan_main({"--paper", "--json", json}), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("recommended: "), std::string::npos);
  EXPECT_NE(out.find("BurstAttention"), std::string::npos);
  EXPECT_NE(out.find("(5.13)"), std::string::npos);
  std::ifstream in(json);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("\"out_of_memory\": true"), std::string::npos);
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--help"}), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("--link-gbps"), std::string::npos);
}

// shard_lengths (what the memory estimate sizes shards by) is the size of every shard_plan
// entry, for every layout, around rounding edges.
TEST(Layout, ShardLengthsAreThePlansSizes) {
  for (algo::Layout layout : {algo::Layout::kContiguous, algo::Layout::kZigzag, algo::Layout::kStriped})
    for (int world = 1; world <= 8; ++world)
      for (std::int64_t n : {std::int64_t{world}, std::int64_t{world} + 1, std::int64_t{97}, std::int64_t{1025},
                             std::int64_t{4501}}) {
        if (n < world) continue;
        const auto plan = algo::shard_plan(n, world, layout);
        const auto lengths = algo::shard_lengths(n, world, layout);
        ASSERT_EQ(lengths.size(), plan.size());
        for (std::size_t r = 0; r < plan.size(); ++r)
          EXPECT_EQ(lengths[r], static_cast<std::int64_t>(plan[r].size()))
              << algo::layout_name(layout) << " n " << n << " world " << world << " rank " << r;
      }
}

// The memory estimate of a run from .npy files is the estimate of the files' sizes, read from
// their headers, not of the size flags' defaults (32768 tokens); a file of the wrong rank
// fails there, naming the flag.
TEST(MemoryEstimate, SizesComeFromTheInputFiles) {
  const std::string dir = testing::TempDir() + "/burst_memory_estimate";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::int64_t count = 1;
    for (std::int64_t x : shape) count *= x;
    const std::vector<float> zeros(static_cast<std::size_t>(count), 0.0f);
    write_npy(dir + "/" + name, zeros.data(), shape);
    return dir + "/" + name;
  };
  cli::RunArgs files;
  files.strategy = "ring-rsa";
  files.q_path = write("q.npy", {1, 190, 4, 64});
  files.k_path = write("k.npy", {1, 190, 2, 64});
  files.v_path = write("v.npy", {1, 190, 2, 64});
  cli::RunArgs flags;
  flags.strategy = "ring-rsa";
  flags.seqlen = 190;
  flags.heads = 4;
  flags.kv_heads = 2;
  flags.head_dim = 64;
  const double from_files = cli::estimate_memory(files, 2, 2, 1).this_machine;
  EXPECT_EQ(from_files, cli::estimate_memory(flags, 2, 2, 1).this_machine);
  EXPECT_LT(from_files, 1e8);  // the default 32768 tokens would need tens of GB

  cli::RunArgs layer;
  layer.layer = true;
  layer.x_path = write("x.npy", {2, 300, 96});
  cli::RunArgs layer_flags;
  layer_flags.layer = true;
  layer_flags.batch = 2;
  layer_flags.seqlen = 300;
  layer_flags.model_dim = 96;
  EXPECT_EQ(cli::estimate_memory(layer, 2, 2, 1).this_machine, cli::estimate_memory(layer_flags, 2, 2, 1).this_machine);

  files.q_path = write("q3.npy", {190, 4, 64});
  try {
    (void)cli::estimate_memory(files, 2, 2, 1);
    ADD_FAILURE() << "a 3-D --q file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--q: expected a 4-D array"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace burst
