#include "distributed.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <string>
#include <mutex>
#include <thread>
#include <vector>

#include "burst/burst_attention.h"
#include "burst/strategy.h"
#include "burst/throttle.h"
#include "burst/world.h"
#include "burst/error.h"
#include "core/hash.h"
#include "link_traffic.h"
#include "progress.h"

namespace burst::cli {
namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Every rank's value of x (collective).
std::vector<double> everyone(comm::Communicator& c, double x) {
  std::vector<double> all(static_cast<std::size_t>(c.world_size()));
  c.all_gather(&x, all.data(), sizeof(double));
  return all;
}
double max_of(comm::Communicator& c, double x) {
  const auto all = everyone(c, x);
  return *std::max_element(all.begin(), all.end());
}
double min_of(comm::Communicator& c, double x) {
  const auto all = everyone(c, x);
  return *std::min_element(all.begin(), all.end());
}
double mean_of(comm::Communicator& c, double x) {
  double sum = x;
  c.all_reduce_sum(&sum, 1);
  return sum / c.world_size();
}

}  // namespace

DistributedResult run_burst(const RunArgs& args, const Problem& p) {
  const algo::Strategy strategy = algo::parse_strategy(args.strategy, "--strategy");
  BURST_CHECK(p.seqlen_q() == p.seqlen_k(), "--seqlen-k: strategy ", args.strategy, " shards one sequence, expected seqlen_k = ",
              p.seqlen_q(), ", got ", p.seqlen_k());
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const bool mpi = comm::launched_by_mpi();
  const int ranks = args.ranks > 0 ? args.ranks : (mpi ? 0 : hardware);
  BURST_CHECK(ranks == 0 || p.seqlen_q() >= ranks, "--seqlen: strategy ", args.strategy, " needs at least one token per rank (",
              ranks, "), got ", p.seqlen_q());
  algo::BurstOptions opt;
  opt.seqlen = p.seqlen_q();
  opt.layout = algo::parse_layout(args.layout, "--layout");
  opt.backward_scheme = algo::parse_scheme(args.bwd_scheme, "--bwd-scheme");
  opt.mask = p.options.mask;
  opt.scale = p.options.scale;
  opt.isa = p.options.isa;
  opt.block_m = p.options.block_m;
  opt.block_n = p.options.block_n;
  opt.double_ring = args.double_ring;
  opt.gradient_wire = args.grad_wire;
  opt.ulysses_degree = args.ulysses_degree;
  // Every process parses the same flags, so this reaches every MPI rank as well.
  if (args.ranks_per_node > 0) setenv("BURST_RANKS_PER_NODE", std::to_string(args.ranks_per_node).c_str(), 1);

  DistributedResult result;
  std::mutex root_mutex;
  const comm::LinkModel link = link_model_of(args);
  // Every rank builds or reads the global inputs: a hash shows they hold the same ones.
  std::uint64_t inputs_hash = hash_bytes(p.q.data<char>(), p.q.bytes());
  for (const Tensor* t : {&p.k, &p.v, &p.dout})
    if (t->bytes() > 0) inputs_hash = hash_bytes(t->data<char>(), t->bytes(), inputs_hash);
  const std::vector<comm::Setting> settings = run_settings(args, inputs_hash);
  comm::run_world(ranks, [&](comm::Communicator& c) {
    comm::check_agreement(c, settings);  // before any rank starts work the others would not do
    const int world = c.world_size(), r = c.rank();
    algo::BurstOptions mine = opt;
    // Threads of one rank: as asked, or the hardware shared among the ranks on this node
    // (thread ranks of this process, or MPI ranks sharing the machine).
    const auto& nodes = c.node_of_rank();
    const auto here = std::count(nodes.begin(), nodes.end(), nodes[static_cast<std::size_t>(c.rank())]);
    mine.threads = args.threads_given ? args.threads : std::max(1, hardware / static_cast<int>(here));
    const auto plan = algo::shard_plan(opt.seqlen, world, opt.layout);
    const auto& pos = plan[static_cast<std::size_t>(r)];
    const auto n = static_cast<std::int64_t>(pos.size());
    auto shard = [&](const Tensor& global) {
      const TensorView& g = global.view();
      Tensor s(g.dtype, g.b, n, g.h, g.d);
      algo::copy_to_shard(g, pos, s.view());
      return s;
    };
    // The strategies run on a wrapper that tallies bytes per link class (intra/inter node).
    // Links slowed to a modelled rate when asked (--link-gbps, burst/throttle.h).
    const std::unique_ptr<comm::Communicator> slow = link.active() ? comm::throttled(c, link) : nullptr;
    LinkCountingCommunicator counted(slow ? *slow : c);
    auto by_rank = [&](std::uint64_t bytes) {
      const auto all = everyone(c, static_cast<double>(bytes));
      return std::vector<double>(all.begin(), all.end());
    };
    const Tensor q = shard(p.q), k = shard(p.k), v = shard(p.v);
    Tensor out(p.dtype(), p.batch(), n, p.heads(), p.head_dim());
    RowStats lse(p.batch(), p.heads(), n);

    // Rank 0 draws the progress bar; the first run is measured against a FLOP estimate.
    ProgressBar bar(r == 0 && ProgressBar::wanted(args.progress));
    const double flops = 4.0 * static_cast<double>(p.batch() * p.heads() * p.head_dim()) *
                         static_cast<double>(p.seqlen_q()) * static_cast<double>(p.seqlen_k()) *
                         kernels::visible_fraction(p.seqlen_q(), p.seqlen_k(), p.options);
    auto timed = [&](auto&& call, algo::RingStats& last, const char* pass, double estimate) {
      std::vector<double> slowest;
      for (int i = 0; i < args.repeat; ++i) {
        bar.begin(std::string(pass) + " " + std::to_string(i + 1) + "/" + std::to_string(args.repeat),
                  slowest.empty() ? estimate : slowest.back());
        c.barrier();
        const auto t0 = Clock::now();
        last = call();
        slowest.push_back(max_of(c, std::chrono::duration<double>(Clock::now() - t0).count()));
        bar.end();
      }
      return median(slowest);
    };
    const double rate = 80e9 * world * mine.threads;  // FLOP/s of the whole job, roughly
    DistributedFigures fig;
    fig.backend = std::string(c.backend());
    fig.ranks = world;
    fig.threads_per_rank = mine.threads;
    fig.layout = algo::layout_name(opt.layout);
    fig.nodes = c.node_count();
    fig.double_ring = opt.double_ring;
    algo::RingStats fs;
    const double forward_seconds = timed([&] {
      counted.reset_link_bytes();
      return algo::strategy_forward(strategy, counted, q.view(), k.view(), v.view(), out.view(), lse.view(), mine);
    }, fs, "forward", flops / rate);
    const std::size_t e = dtype_size(p.dtype());
    fig.forward_bytes = mean_of(c, static_cast<double>(fs.bytes_sent));
    fig.forward_bytes_saved = mean_of(c, static_cast<double>(fs.bytes_saved));
    fig.node_of_rank = c.node_of_rank();
    const auto link_figures = [&](std::vector<double>(&intra)[2], std::vector<double>(&inter)[2]) {
      const LinkBytes& l = counted.link_bytes();
      intra[0] = by_rank(l.intra_node);
      inter[0] = by_rank(l.inter_node);
      intra[1] = by_rank(l.intra_node_p2p);
      inter[1] = by_rank(l.inter_node_p2p);
    };
    link_figures(fig.forward_intra_node_bytes, fig.forward_inter_node_bytes);
    std::int64_t longest = 0;
    for (const auto& s : plan) longest = std::max(longest, static_cast<std::int64_t>(s.size()));
    const double kv_rows = static_cast<double>(p.batch() * p.kv_heads() * p.head_dim());
    // All-gather moves equal blocks of the longest shard; the rings move every other shard once.
    // Ulysses: this rank's rows of every other rank's heads go out (q, k, v), and its heads
    // of everyone's rows come back (O in the output dtype, lse); per-rank mean.
    double ulysses_rows_out = 0, ulysses_rows_in = 0;
    for (int j = 0; j < world; ++j)
      for (int i = 0; i < world; ++i)
        if (i != j) {
          ulysses_rows_out += static_cast<double>(p.batch()) * static_cast<double>(plan[static_cast<std::size_t>(j)].size());
          ulysses_rows_in += static_cast<double>(p.batch()) * static_cast<double>(plan[static_cast<std::size_t>(i)].size());
        }
    ulysses_rows_out /= world;
    ulysses_rows_in /= world;
    const double hq_p = static_cast<double>(p.heads()) / world, hkv_p = static_cast<double>(p.kv_heads()) / world;
    const auto d = static_cast<double>(p.head_dim());
    const auto ed = static_cast<double>(e);
    fig.forward_bytes_formula =
        strategy == algo::Strategy::kUlysses
            ? ulysses_rows_out * (hq_p + 2 * hkv_p) * d * ed + ulysses_rows_in * hq_p * (d * ed + 4)
        : strategy == algo::Strategy::kAllGather
                                    ? 2.0 * kv_rows * static_cast<double>(longest * (world - 1)) * static_cast<double>(e)
                                    : 2.0 * kv_rows * static_cast<double>(opt.seqlen) * static_cast<double>(e) * (world - 1) / world;
    fig.strategy = args.strategy;
    fig.forward_exposed = max_of(c, fs.wait_seconds);
    fig.forward_compute_min = min_of(c, fs.compute_seconds);
    fig.forward_compute_max = max_of(c, fs.compute_seconds);

    Tensor dq, dk, dv;
    double backward_seconds = 0;
    if (p.backward) {
      const Tensor dout = shard(p.dout);
      dq = Tensor(DType::kF32, p.batch(), n, p.heads(), p.head_dim());
      dk = Tensor(DType::kF32, p.batch(), n, p.kv_heads(), p.head_dim());
      dv = Tensor(DType::kF32, p.batch(), n, p.kv_heads(), p.head_dim());
      algo::RingStats bs;
      backward_seconds = timed([&] {
        counted.reset_link_bytes();
        return algo::strategy_backward(strategy, counted, q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(),
                                       dq.view(), dk.view(), dv.view(), mine);
      }, bs, "backward", 2.5 * flops / (0.75 * rate));
      std::vector<std::int64_t> lengths;
      for (const auto& s : plan) lengths.push_back(static_cast<std::int64_t>(s.size()));
      fig.backward_scheme = strategy == algo::Strategy::kAllGather ? "reduce-scatter"
                            : strategy == algo::Strategy::kUlysses ? "all-to-all"
                            : strategy == algo::Strategy::kRingRsa ? "K, V, K rings + all-reduce"
                            : strategy == algo::Strategy::kUsp     ? "all-to-all + ring " + algo::scheme_name(bs.scheme)
                                                                   : algo::scheme_name(bs.scheme);
      fig.backward_bytes = mean_of(c, static_cast<double>(bs.bytes_sent));
      link_figures(fig.backward_intra_node_bytes, fig.backward_inter_node_bytes);
      // ring-rsa: K, V, K passes plus two ring all-reduces of full-length fp32 dK, dV.
      const double full = static_cast<double>(p.batch() * opt.seqlen * p.kv_heads() * p.head_dim());
      const double rsa_all_reduce = 2.0 * 2.0 * (world - 1) * std::ceil(full / world) * 4.0;
      fig.backward_bytes_formula =
          strategy == algo::Strategy::kRingRsa
              ? 3.0 * full * static_cast<double>(e) * (world - 1) / world + rsa_all_reduce
          : strategy == algo::Strategy::kUlysses
              ? ulysses_rows_out * ((2 * hq_p + 2 * hkv_p) * d * ed + 2 * hq_p * 4) + ulysses_rows_in * (hq_p + 2 * hkv_p) * d * 4
          : strategy == algo::Strategy::kAllGather
              ? 2.0 * kv_rows * static_cast<double>(longest * (world - 1)) * static_cast<double>(e + 4)
              : static_cast<double>(algo::backward_bytes(bs.scheme, lengths, p.batch(), p.heads(), p.kv_heads(),
                                                         p.head_dim(), e, dtype_size(opt.gradient_wire)));
      fig.backward_exposed = max_of(c, bs.wait_seconds);
      fig.backward_compute_min = min_of(c, bs.compute_seconds);
      fig.backward_compute_max = max_of(c, bs.compute_seconds);
    }

    // Rank 0 collects everything in global token order.
    ForwardOutputs global_fwd;
    Gradients global_grads;
    const bool root = r == 0;
    if (root) {
      global_fwd = {Tensor(p.dtype(), p.batch(), opt.seqlen, p.heads(), p.head_dim()), RowStats(p.batch(), p.heads(), opt.seqlen)};
      if (p.backward) {
        global_grads = {Tensor(DType::kF32, p.batch(), opt.seqlen, p.heads(), p.head_dim()),
                        Tensor(DType::kF32, p.batch(), opt.seqlen, p.kv_heads(), p.head_dim()),
                        Tensor(DType::kF32, p.batch(), opt.seqlen, p.kv_heads(), p.head_dim())};
      }
    }
    algo::gather_rows(c, out.view(), plan, root ? &global_fwd.out.view() : nullptr);
    algo::gather_stats(c, lse.view(), plan, root ? &global_fwd.lse.view() : nullptr);
    if (p.backward) {
      algo::gather_rows(c, dq.view(), plan, root ? &global_grads.dq.view() : nullptr);
      algo::gather_rows(c, dk.view(), plan, root ? &global_grads.dk.view() : nullptr);
      algo::gather_rows(c, dv.view(), plan, root ? &global_grads.dv.view() : nullptr);
    }
    if (root) {
      std::lock_guard lock(root_mutex);
      result.root = true;
      result.fwd = std::move(global_fwd);
      result.grads = std::move(global_grads);
      result.forward_seconds = forward_seconds;
      if (p.backward) result.backward_seconds = backward_seconds;
      result.figures = fig;
    }
  });
  return result;
}

}  // namespace burst::cli
