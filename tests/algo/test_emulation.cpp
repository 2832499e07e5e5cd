// Compute emulation (kernels::EmulatedCompute, docs/emulation.md): an emulated call takes the
// model's time for the tiles it would compute and computes nothing; an emulated strategy run
// sends exactly the real run's bytes and runs its schedule, in the model's time.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "../support.h"
#include "rank_problem.h"
#include "burst/local_world.h"
#include "burst/throttle.h"
#include "burst/strategy.h"
#include "kernels/emulate.h"

namespace burst {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::shared_ptr<const kernels::EmulatedCompute> model(double forward_gflops, double backward_gflops) {
  return std::make_shared<const kernels::EmulatedCompute>(
      kernels::EmulatedCompute{forward_gflops * 1e9, backward_gflops * 1e9, 0.0});
}

// Sleeping never ends early; a quiet machine overshoots by well under 15% (+ a scheduling
// allowance for this shared one).
void expect_model_time(double measured, double modelled, const char* what) {
  EXPECT_GE(measured, modelled) << what;
  EXPECT_LE(measured, 1.15 * modelled + 0.03) << what;
}

TEST(Emulation, KernelCallsTakeTheModelsTimeAndComputeNothing) {
  constexpr std::int64_t kSeq = 2048, kHeads = 2, kDim = 64;
  const Tensor q = testing::random_tensor(DType::kF32, 1, kSeq, kHeads, kDim, 1);
  Tensor out(DType::kF32, 1, kSeq, kHeads, kDim), dq(DType::kF32, 1, kSeq, kHeads, kDim);
  RowStats lse(1, kHeads, kSeq), delta(1, kHeads, kSeq);
  kernels::AttentionOptions o;
  o.block_m = o.block_n = 128;
  o.emulate = model(10, 25);
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal" : "full");
    o.mask.causal = causal;
    out.fill_nan();
    dq.fill_nan();
    std::fill_n(lse.view().data, kHeads * kSeq, std::numeric_limits<float>::quiet_NaN());
    // 16 x 16 tiles of 128 x 128; causal skips the 120 above the diagonal.
    const double tiles = causal ? 136 : 256, flops = tiles * 128 * 128 * 4.0 * kDim * kHeads;
    const double forward = seconds_of([&] { kernels::attention_forward(q.view(), q.view(), q.view(), out.view(), lse.view(), o); });
    expect_model_time(forward, flops / 10e9, "forward");
    // A fresh forward leaves zeros (finite for what follows), not attention.
    EXPECT_EQ(out.data<float>()[0], 0.0f);
    EXPECT_EQ(out.data<float>()[kSeq * kHeads * kDim - 1], 0.0f);
    EXPECT_EQ(lse.view().data[kHeads * kSeq - 1], 0.0f);
    const double backward = seconds_of([&] {
      kernels::attention_backward(q.view(), q.view(), q.view(), q.view(), lse.view(), delta.view(), dq.view(),
                                  dq.view(), dq.view(), o);
    });
    expect_model_time(backward, 2.5 * flops / 25e9, "backward");
    EXPECT_TRUE(std::isnan(dq.data<float>()[0])) << "an emulated backward wrote its gradients";
  }
}

TEST(Emulation, KernelRefusesAModelWithoutRates) {
  const Tensor q = testing::random_tensor(DType::kF32, 1, 64, 1, 64, 1);
  Tensor out(DType::kF32, 1, 64, 1, 64);
  RowStats lse(1, 1, 64);
  kernels::AttentionOptions o;
  o.emulate = model(0, 1);
  try {
    kernels::attention_forward(q.view(), q.view(), q.view(), out.view(), lse.view(), o);
    ADD_FAILURE() << "a forward rate of 0 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("emulate: forward FLOP/s must be > 0"), std::string::npos) << e.what();
  }
}

// An emulated call sleeps until its communicator has something due, not to its end: a
// throttled send posted before a 0.4 s emulated forward is released when its link has
// carried it (0.05 s), by the call's progress hook, and arrives then, not after the call.
TEST(Emulation, IdleCallsReleaseHeldSendsWhenDue) {
  comm::LinkModel link;
  link.inter_node_bytes_per_second = 20e6;  // 1 MB: 0.05 s
  std::atomic<double> arrived{0};
  // When rank 0 posts the send: the receiver leaves the barrier later than the sender may, so
  // its own clock would start late.
  std::atomic<Clock::rep> posted{0};
  comm::run_local_ranks(2, [&](comm::Communicator& c) {
    c.set_ranks_per_node(1);
    const auto slow = comm::throttled(c, link);
    std::vector<std::uint8_t> data(1'000'000, 7), got(data.size(), 0);
    c.barrier();
    if (c.rank() == 0) {
      posted = Clock::now().time_since_epoch().count();
      comm::Request send = slow->isend(data.data(), data.size(), 1, 1);
      constexpr std::int64_t kSeq = 1024, kDim = 64;
      const Tensor q = testing::random_tensor(DType::kF32, 1, kSeq, 1, kDim, 1);
      Tensor out(DType::kF32, 1, kSeq, 1, kDim);
      RowStats lse(1, 1, kSeq);
      kernels::AttentionOptions o;
      o.emulate = model(4.0 * kSeq * kSeq * kDim / 0.4 / 1e9, 1);  // 0.4 s
      o.progress = [&] { slow->progress(); };
      o.progress_due = [&] { return slow->progress_due(); };
      const double forward = seconds_of([&] { kernels::attention_forward(q.view(), q.view(), q.view(), out.view(), lse.view(), o); });
      EXPECT_GE(forward, 0.4);
      send.wait(slow->deadline());
    } else {
      slow->irecv(got.data(), got.size(), 0, 1).wait(slow->deadline());
      arrived = std::chrono::duration<double>(Clock::now().time_since_epoch() - Clock::duration(posted.load())).count();
      EXPECT_EQ(got, data);
    }
  });
  EXPECT_GE(arrived.load(), 0.05);
  EXPECT_LT(arrived.load(), 0.25) << "the held send waited for the emulated call to end";
}

// BurstAttention over 4 in-process ranks: the emulated run sends the real run's bytes and
// computes and skips the same ring steps; with no mask every step has the same area, so the
// model's time is P steps of it, which the emulated forward and backward take (links here
// are shared memory, far faster than the modelled compute).
TEST(Emulation, RingRunsSendTheRealBytesInTheModelsTime) {
  constexpr int kRanks = 4;
  // Small shards and slow modelled rates: 0.27 s of model per pass against a few ms of real
  // work (merges, sends), so a loaded machine still keeps to the model.
  constexpr std::int64_t kSeq = 1024, kHeads = 2, kDim = 64, kShard = kSeq / kRanks;
  constexpr double kForward = 0.5, kBackward = 1.25;  // GFLOP/s
  for (bool causal : {false, true}) {
    SCOPED_TRACE(causal ? "causal zigzag" : "full");
    comm::run_local_ranks(kRanks, [&](comm::Communicator& c) {
      algo::StrategyOptions o;
      o.seqlen = kSeq;
      o.layout = algo::Layout::kZigzag;
      o.mask.causal = causal;
      o.block_m = o.block_n = 64;
      testing::RankProblem shards(kShard, kHeads, kDim, c.rank());
      auto run = [&](algo::StrategyStats& fwd, algo::StrategyStats& bwd, double& fwd_s, double& bwd_s) {
        c.barrier();
        fwd_s = seconds_of([&] { fwd = shards.forward(algo::Strategy::kBurst, c, o); });
        c.barrier();
        bwd_s = seconds_of([&] { bwd = shards.backward(algo::Strategy::kBurst, c, o); });
      };
      algo::StrategyStats real_f, real_b, emu_f, emu_b;
      double s0 = 0, s1 = 0, fwd_s = 0, bwd_s = 0;
      run(real_f, real_b, s0, s1);
      o.emulate = model(kForward, kBackward);
      run(emu_f, emu_b, fwd_s, bwd_s);
      EXPECT_EQ(emu_f.bytes_sent, real_f.bytes_sent);
      EXPECT_EQ(emu_b.bytes_sent, real_b.bytes_sent);
      EXPECT_EQ(emu_f.steps_computed, real_f.steps_computed);
      EXPECT_EQ(emu_f.steps_skipped, real_f.steps_skipped);
      EXPECT_EQ(emu_b.steps_computed, real_b.steps_computed);
      if (!causal) {
        const double step = static_cast<double>(kShard * kShard) * 4.0 * kDim * kHeads;
        expect_model_time(fwd_s, kRanks * step / (kForward * 1e9), "forward");
        expect_model_time(bwd_s, kRanks * 2.5 * step / (kBackward * 1e9), "backward");
      }
    });
  }
}

// The double ring's backward over 4 nodes of 2 ranks, inter-node links throttled so that a
// node's partial dQ takes 0.6 of a compute step to cross: every outer step but the first
// sends one home across nodes. They must cross while the next outer step computes; only the
// last is waited for. (Waiting for each at the end of its own outer step, as the first
// version did, exposes three crossings: 0.18 s of wait against the 0.06 s allowed here.)
TEST(Emulation, DoubleRingBackwardHidesTheNodePartialsGoingHome) {
  constexpr int kRanks = 8, kPerNode = 2;
  constexpr std::int64_t kShard = 128, kHeads = 2, kDim = 64, kSeq = kRanks * kShard;
  constexpr double kStep = 0.1;  // seconds of modelled backward per ring step
  const double step_flops = 10.0 * kShard * kShard * kDim * kHeads;
  const double dq_bytes = 4.0 * kShard * kHeads * kDim;
  const double crossing = 0.6 * kStep;  // a node partial's inter-node hop
  comm::LinkModel links;
  links.inter_node_bytes_per_second = dq_bytes / crossing;  // a bundle (Q, dO, D, lse) takes 2.03 x that
  comm::run_local_ranks(kRanks, [&](comm::Communicator& local) {
    local.set_ranks_per_node(kPerNode);
    const auto c = comm::throttled(local, links);
    algo::StrategyOptions o;
    o.seqlen = kSeq;
    o.layout = algo::Layout::kContiguous;
    o.double_ring = true;
    o.backward_scheme = algo::BackwardScheme::kQuery;
    o.emulate = model(1000.0, step_flops / kStep / 1e9);
    testing::RankProblem shards(kShard, kHeads, kDim, local.rank());
    shards.forward(algo::Strategy::kBurst, *c, o);
    c->barrier();
    algo::StrategyStats stats;
    const double took = seconds_of([&] { stats = shards.backward(algo::Strategy::kBurst, *c, o); });
    EXPECT_EQ(stats.steps_computed, kRanks);
    EXPECT_LE(stats.wait_seconds, crossing + 0.06) << "rank " << local.rank() << " waited for node partials";
    expect_model_time(took, kRanks * kStep + crossing, "double-ring backward");
  });
}

}  // namespace
}  // namespace burst
