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

void apply_world_settings(comm::Communicator& c, const RunArgs& args) {
  if (args.timeout_seconds > 0)
    c.set_timeout(std::chrono::milliseconds(static_cast<std::int64_t>(args.timeout_seconds * 1000.0)));
  if (args.ranks_per_node > 0) c.set_ranks_per_node(args.ranks_per_node);
}

algo::StrategyOptions strategy_options(const RunArgs& args, std::int64_t seqlen, const kernels::AttentionOptions& k) {
  algo::StrategyOptions o;
  o.seqlen = seqlen;
  o.layout = args.layout;
  o.backward_scheme = args.bwd_scheme;
  o.mask = k.mask;
  o.scale = k.scale;
  o.isa = k.isa;
  o.block_m = k.block_m;
  o.block_n = k.block_n;
  o.double_ring = args.double_ring;
  o.gradient_wire = args.grad_wire;
  o.ulysses_degree = args.ulysses_degree;
  if (args.emulate) o.emulate = std::make_shared<const kernels::EmulatedCompute>(*args.emulate);
  return o;
}

int threads_of_rank(const RunArgs& args, const comm::Communicator& c) {
  if (args.threads_given) return args.threads;
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const auto& nodes = c.node_of_rank();
  const auto here = std::count(nodes.begin(), nodes.end(), nodes[static_cast<std::size_t>(c.rank())]);
  return std::max(1, hardware / static_cast<int>(here));
}

namespace {

// One rank's run of the strategy: its shards, the passes timed, and the figures all ranks
// agree on (collective calls in the same order on every rank).
class RankRun {
 public:
  RankRun(const RunArgs& args, const Problem& p, const algo::StrategyInfo& info, const algo::StrategyOptions& opt,
          const comm::LinkModel& link, const std::shared_ptr<comm::Fabric>& fabric, comm::Communicator& c)
      : args_(args), p_(p), info_(info), opt_(opt), c_(c),
        plan_(algo::shard_plan(opt.seqlen, c.world_size(), opt.layout, opt.mask)),
        slow_(link.active() ? comm::throttled(c, link, fabric) : nullptr), counted_(slow_ ? *slow_ : c),
        bar_(c.rank() == 0 && ProgressBar::wanted(args.progress)) {
    opt_.threads = threads_of_rank(args, c);
    for (const auto& s : plan_) lengths_.push_back(static_cast<std::int64_t>(s.size()));
    shape_ = {p.batch(), p.heads(), p.kv_heads(), p.head_dim(), dtype_size(p.dtype()), dtype_size(p.dtype())};
    q_ = shard(p.q);
    k_ = shard(p.k);
    v_ = shard(p.v);
    out_ = Tensor(p.dtype(), p.batch(), rows(), p.heads(), p.head_dim());
    lse_ = RowStats(p.batch(), p.heads(), rows());
    fig_.strategy = algo::strategy_name(args.strategy);
    fig_.backend = std::string(c.backend());
    fig_.ranks = c.world_size();
    fig_.threads_per_rank = opt_.threads;
    fig_.layout = algo::layout_name(opt.layout);
    fig_.nodes = c.node_count();
    fig_.double_ring = opt.double_ring;
    fig_.node_of_rank = c.node_of_rank();
    // The layout's balance: this rank's exact work (the kernels skip masked tiles).
    fig_.work_pairs_by_rank =
        everyone(c, algo::visible_pairs(plan_[static_cast<std::size_t>(c.rank())], opt.seqlen, opt.mask));
  }

  // The forward, timed; its figures.
  double forward(double flops) {
    algo::StrategyStats fs;
    const double seconds = timed([&] {
      counted_.reset_link_bytes();
      return info_.forward(counted_, q_.view(), k_.view(), v_.view(), out_.view(), lse_.view(), opt_);
    }, fs, "forward", flops / rate());
    fig_.forward_bytes = mean_of(c_, static_cast<double>(fs.bytes_sent));
    fig_.forward_bytes_saved = mean_of(c_, static_cast<double>(fs.bytes_saved));
    fig_.forward_bytes_formula = algo::mean_bytes(info_.strategy, shape_, lengths_, opt_).forward;
    link_figures(fig_.forward_intra_node_bytes, fig_.forward_inter_node_bytes);
    time_figures(fs, fig_.forward_exposed, fig_.forward_compute_min, fig_.forward_compute_max);
    fig_.forward_compute_by_rank = everyone(c_, fs.compute_seconds);
    step_figures(fs, fig_.forward_steps_computed, fig_.forward_steps_skipped);
    return seconds;
  }

  // The backward, timed; its figures.
  double backward(double flops) {
    const Tensor dout = shard(p_.dout);
    dq_ = Tensor(DType::kF32, p_.batch(), rows(), p_.heads(), p_.head_dim());
    dk_ = Tensor(DType::kF32, p_.batch(), rows(), p_.kv_heads(), p_.head_dim());
    dv_ = Tensor(DType::kF32, p_.batch(), rows(), p_.kv_heads(), p_.head_dim());
    algo::StrategyStats bs;
    const double seconds = timed([&] {
      counted_.reset_link_bytes();
      return info_.backward(counted_, q_.view(), k_.view(), v_.view(), out_.view(), lse_.view(), dout.view(),
                            dq_.view(), dk_.view(), dv_.view(), opt_);
    }, bs, "backward", 2.5 * flops / (0.75 * rate()));
    // What the backward moved: a ring's scheme, after the collectives of a hybrid.
    const std::string scheme = info_.ring_options ? algo::scheme_name(bs.scheme) : "";
    fig_.backward_scheme = info_.backward_moves.empty() ? scheme
                           : scheme.empty()              ? std::string(info_.backward_moves)
                                                         : std::string(info_.backward_moves) + " " + scheme;
    fig_.backward_bytes = mean_of(c_, static_cast<double>(bs.bytes_sent));
    fig_.backward_bytes_formula = algo::mean_bytes(info_.strategy, shape_, lengths_, opt_).backward;
    link_figures(fig_.backward_intra_node_bytes, fig_.backward_inter_node_bytes);
    fig_.backward_bytes_saved = mean_of(c_, static_cast<double>(bs.bytes_saved));
    time_figures(bs, fig_.backward_exposed, fig_.backward_compute_min, fig_.backward_compute_max);
    fig_.backward_compute_by_rank = everyone(c_, bs.compute_seconds);
    step_figures(bs, fig_.backward_steps_computed, fig_.backward_steps_skipped);
    return seconds;
  }

  // Collects the results in global token order on rank 0 (collective).
  void gather(ForwardOutputs& fwd, Gradients& grads) const {
    const bool root = c_.rank() == 0;
    const std::int64_t b = p_.batch(), n = opt_.seqlen, d = p_.head_dim();
    if (root) {
      fwd = {Tensor(p_.dtype(), b, n, p_.heads(), d), RowStats(b, p_.heads(), n)};
      if (p_.backward) {
        grads = {Tensor(DType::kF32, b, n, p_.heads(), d), Tensor(DType::kF32, b, n, p_.kv_heads(), d),
                 Tensor(DType::kF32, b, n, p_.kv_heads(), d)};
      }
    }
    algo::gather_rows(c_, out_.view(), plan_, root ? &fwd.out.view() : nullptr);
    algo::gather_stats(c_, lse_.view(), plan_, root ? &fwd.lse.view() : nullptr);
    if (p_.backward) {
      algo::gather_rows(c_, dq_.view(), plan_, root ? &grads.dq.view() : nullptr);
      algo::gather_rows(c_, dk_.view(), plan_, root ? &grads.dk.view() : nullptr);
      algo::gather_rows(c_, dv_.view(), plan_, root ? &grads.dv.view() : nullptr);
    }
  }

  const DistributedFigures& figures() const { return fig_; }

 private:
  std::int64_t rows() const { return static_cast<std::int64_t>(plan_[static_cast<std::size_t>(c_.rank())].size()); }
  double rate() const { return 80e9 * c_.world_size() * opt_.threads; }  // FLOP/s of the whole job, roughly

  Tensor shard(const Tensor& global) const {
    const TensorView& g = global.view();
    Tensor s(g.dtype, g.b, rows(), g.h, g.d);
    algo::copy_to_shard(g, plan_[static_cast<std::size_t>(c_.rank())], s.view());
    return s;
  }

  // Median over --repeat runs of the slowest rank's seconds; the bar measures the first run
  // against `estimate`.
  template <class Call>
  double timed(Call&& call, algo::StrategyStats& last, const char* pass, double estimate) {
    std::vector<double> slowest;
    for (int i = 0; i < args_.repeat; ++i) {
      bar_.begin(std::string(pass) + " " + std::to_string(i + 1) + "/" + std::to_string(args_.repeat),
                 slowest.empty() ? estimate : slowest.back());
      c_.barrier();
      const auto t0 = Clock::now();
      last = call();
      slowest.push_back(max_of(c_, std::chrono::duration<double>(Clock::now() - t0).count()));
      bar_.end();
    }
    return median(slowest);
  }

  // The slowest rank's wait, and the fastest and slowest rank's kernel time (collective).
  void time_figures(const algo::StrategyStats& s, double& exposed, double& compute_min, double& compute_max) const {
    exposed = max_of(c_, s.wait_seconds);
    compute_min = min_of(c_, s.compute_seconds);
    compute_max = max_of(c_, s.compute_seconds);
  }

  // Steps computed and skipped over all ranks (collective).
  void step_figures(const algo::StrategyStats& s, std::int64_t& computed, std::int64_t& skipped) const {
    double steps[2] = {static_cast<double>(s.steps_computed), static_cast<double>(s.steps_skipped)};
    c_.all_reduce_sum(steps, 2);
    computed = static_cast<std::int64_t>(steps[0]);
    skipped = static_cast<std::int64_t>(steps[1]);
  }

  // Bytes every rank sent to its own node and to others in the last run (every operation,
  // and point-to-point only).
  void link_figures(std::vector<double> (&intra)[2], std::vector<double> (&inter)[2]) const {
    const LinkBytes& l = counted_.link_bytes();
    intra[0] = everyone(c_, static_cast<double>(l.intra_node));
    inter[0] = everyone(c_, static_cast<double>(l.inter_node));
    intra[1] = everyone(c_, static_cast<double>(l.intra_node_p2p));
    inter[1] = everyone(c_, static_cast<double>(l.inter_node_p2p));
  }

  const RunArgs& args_;
  const Problem& p_;
  const algo::StrategyInfo& info_;
  algo::StrategyOptions opt_;
  comm::Communicator& c_;
  std::vector<std::vector<std::int64_t>> plan_;
  std::vector<std::int64_t> lengths_;
  algo::ProblemShape shape_;
  // The strategies run on a wrapper that tallies bytes per link class (intra/inter node),
  // over links slowed to a modelled rate when asked (--link-gbps, burst/throttle.h).
  std::unique_ptr<comm::Communicator> slow_;
  LinkCountingCommunicator counted_;
  ProgressBar bar_;
  Tensor q_, k_, v_, out_, dq_, dk_, dv_;
  RowStats lse_;
  DistributedFigures fig_;
};

}  // namespace

DistributedResult run_burst(const RunArgs& args, const Problem& p) {
  const algo::StrategyInfo& info = algo::strategy_info(args.strategy);
  BURST_CHECK(p.seqlen_q() == p.seqlen_k(), "--seqlen-k: strategy ", info.name, " shards one sequence, expected seqlen_k = ",
              p.seqlen_q(), ", got ", p.seqlen_k());
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  const int ranks = args.ranks > 0 ? args.ranks : (comm::launched_by_mpi() ? 0 : hardware);
  BURST_CHECK(ranks == 0 || p.seqlen_q() >= ranks, "--seqlen: strategy ", info.name, " needs at least one token per rank (",
              ranks, "), got ", p.seqlen_q());
  const algo::StrategyOptions opt = strategy_options(args, p.seqlen_q(), p.options);
  if (p.options.mask.has_documents() && ranks > 0) {
    // A strategy that cannot take packed documents (ring-rsa) says so by the registry's
    // reason, naming the flags, before any rank starts.
    algo::ProblemShape shape;
    shape.n_heads_q = p.heads();
    shape.n_heads_kv = p.kv_heads();
    algo::StrategyOptions whole = opt;
    whole.mask.documents = {};
    const std::string reason = info.cannot_run(shape, ranks, opt, false);
    BURST_CHECK(reason.empty() || !info.cannot_run(shape, ranks, whole, false).empty(), "--strategy: ", reason,
                " (documents from --doc-lens, --doc-lens-from or --doc-dist)");
  }
  const comm::LinkModel link = link_model_of(args);
  // Nodes sharing NICs: one fabric for every in-process rank (MPI ranks cannot share one).
  std::shared_ptr<comm::Fabric> fabric;
  if (args.nics_per_node > 0) {
    BURST_CHECK(ranks > 0, "--nics-per-node: NICs are shared by in-process ranks only (--ranks N, not mpirun)");
    BURST_CHECK(ranks % args.ranks_per_node == 0, "--ranks-per-node: ", args.ranks_per_node,
                " must divide the ranks (", ranks, ") for --nics-per-node");
    fabric = comm::make_fabric(ranks / args.ranks_per_node, args.nics_per_node);
  }
  // Every rank builds or reads the global inputs: a hash shows they hold the same ones.
  std::uint64_t inputs_hash = hash_bytes(p.q.data<char>(), p.q.bytes());
  for (const Tensor* t : {&p.k, &p.v, &p.dout})
    if (t->bytes() > 0) inputs_hash = hash_bytes(t->data<char>(), t->bytes(), inputs_hash);
  const std::vector<comm::Setting> settings = run_settings(args, inputs_hash);
  // FLOPs of the forward, for the progress bar's first estimate.
  const double flops = 4.0 * static_cast<double>(p.batch() * p.heads() * p.head_dim()) *
                       static_cast<double>(p.seqlen_q()) * static_cast<double>(p.seqlen_k()) *
                       kernels::visible_fraction(p.seqlen_q(), p.seqlen_k(), p.options);
  DistributedResult result;
  std::mutex root_mutex;
  comm::run_world(ranks, [&](comm::Communicator& c) {
    apply_world_settings(c, args);
    comm::check_agreement(c, settings);  // before any rank starts work the others would not do
    RankRun run(args, p, info, opt, link, fabric, c);
    const double forward_seconds = run.forward(flops);
    const double backward_seconds = p.backward ? run.backward(flops) : 0;
    ForwardOutputs fwd;
    Gradients grads;
    run.gather(fwd, grads);
    if (c.rank() == 0) {
      std::lock_guard lock(root_mutex);
      result.root = true;
      result.fwd = std::move(fwd);
      result.grads = std::move(grads);
      result.forward_seconds = forward_seconds;
      if (p.backward) result.backward_seconds = backward_seconds;
      result.figures = run.figures();
    }
  });
  return result;
}

}  // namespace burst::cli
