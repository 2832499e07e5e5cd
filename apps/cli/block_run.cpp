#include "block_run.h"
#include "layer_run.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "burst/error.h"
#include "burst/layout.h"
#include "burst/npy.h"
#include "burst/throttle.h"
#include "burst/world.h"
#include "core/hash.h"
#include "distributed.h"
#include "kernels/blas.h"
#include "link_traffic.h"
#include "problem.h"
#include "progress.h"

namespace burst::cli {
namespace {

using Clock = std::chrono::steady_clock;

// Normwise relative errors, as --layer's: fp32 results carry fp32 rounding only (observed
// 1e-6 over a few blocks); a bf16 attention core adds a rounding of 2^-9 relative to Q, K, V
// and dO, amplified by the scores.
constexpr double kToleranceF32 = 1e-4;
constexpr double kToleranceBF16 = 3e-2;

// This rank's bytes in one pass, summed over the blocks (sent, and spared by the mask).
struct PassBytesSent {
  std::uint64_t core = 0, spared = 0, layer = 0, mlp = 0, grads = 0;
};
PassBytesSent sent_of(const algo::BlockStats& s) {
  return {s.attention.attention.bytes_sent, s.attention.attention.bytes_saved, s.attention.layer_bytes_sent,
          s.mlp_bytes_sent, s.attention.grad_bytes_sent + s.grad_bytes_sent};
}

// One rank of the run: its share of the inputs, the timed passes and their figures.
class BlockRank {
 public:
  BlockRank(comm::Communicator& c, const RunArgs& args, const BlockProblem& p, const algo::LayerOptions& opt)
      : c_(c), args_(args), p_(p), opt_(opt),
        plan_(algo::shard_plan(p.seqlen, c.world_size(), opt.attention.layout, opt.attention.mask)),
        slow_(link_model_of(args).active() ? comm::throttled(c, link_model_of(args)) : nullptr),
        counted_(slow_ ? *slow_ : c), stack_(counted_, p.shape, opt, p.layers),
        bar_(c.rank() == 0 && ProgressBar::wanted(args.progress)) {
    for (const auto& s : plan_) lengths_.push_back(static_cast<std::int64_t>(s.size()));
    if (tp()) {
      for (const algo::BlockParameters& w : p.weights)
        shards_.push_back(algo::shard_block_parameters(w, p.shape, stack_.block(0).heads(), stack_.block(0).hidden()));
    }
    x_ = Tensor(DType::kF32, p.batch, stack_.rows(), 1, p.shape.attention.model_dim);
    y_ = Tensor(DType::kF32, p.batch, stack_.rows(), 1, p.shape.attention.model_dim);
    algo::copy_to_shard(p.x.view(), stack_.positions(), x_.view());
    y_.fill_nan();
  }

  // --repeat forward and backward pairs (a backward follows its forward); medians of each.
  void run(BlockReport& report) {
    std::vector<double> forward_times, backward_times;
    algo::BlockStats fs, bs;
    if (args_.backward) prepare_backward();
    for (int i = 0; i < args_.repeat; ++i) {
      std::string of(1, ' ');  // built by appending: GCC 12 misreads " " + ... (-Wrestrict)
      of.append(std::to_string(i + 1)).append("/").append(std::to_string(args_.repeat));
      forward_times.push_back(timed("forward" + of, [&] { return stack_.forward(params(), x_.view(), y_.view()); }, fs));
      if (!args_.backward) continue;
      backward_times.push_back(timed("backward" + of, [&] {
        return stack_.backward(params(), dy_.view(), dx_.view(), grads_);
      }, bs));
    }
    const algo::LayerTraffic layer = algo::expected_layer_traffic(opt_.strategy, p_.shape.attention, p_.batch, lengths_, c_.rank());
    const algo::BlockTraffic block = algo::expected_block_traffic(opt_.strategy, p_.shape, p_.batch, lengths_, c_.rank());
    const algo::StrategyBytes core = algo::strategy_info(opt_.strategy).bytes(core_shape(), lengths_, c_.rank(), opt_.attention);
    const std::uint64_t l = static_cast<std::uint64_t>(p_.layers);
    report.forward = figures(fs, median(forward_times), {l * core.forward, 0, l * layer.forward, l * block.forward, 0},
                             "forward", report.byte_mismatches);
    if (args_.backward) {
      report.backward = figures(bs, median(backward_times),
                                {l * core.backward, 0, l * layer.backward, l * block.backward, l * (layer.grads + block.grads)},
                                "backward", report.byte_mismatches);
    }
    double params_bytes = 0;
    for (const algo::BlockParameters& w : params()) params_bytes += static_cast<double>(w.bytes());
    report.param_mb = mean(params_bytes) / 1e6;
    report.saved_mb = mean(static_cast<double>(stack_.saved_bytes())) / 1e6;
    report.threads = opt_.attention.threads;
  }

  // Y, dX and the full weight gradients in global order on rank 0. Collective.
  void collect(BlockResults& into) {
    const bool root = c_.rank() == 0;
    const std::int64_t n = p_.seqlen, dim = p_.shape.attention.model_dim;
    if (root) into.y = Tensor(DType::kF32, p_.batch, n, 1, dim);
    gather(y_, into.y);
    if (!args_.backward) return;
    if (root) into.dx = Tensor(DType::kF32, p_.batch, n, 1, dim);
    gather(dx_, into.dx);
    for (algo::BlockParameters& g : grads_) {
      if (tp()) {
        algo::BlockParameters full = gather_block_grads(c_, g, p_.shape);
        if (root) into.grads.push_back(std::move(full));
      } else if (root) {
        into.grads.push_back(std::move(g));  // all-reduced: every rank holds the whole gradient
      }
    }
  }

 private:
  bool tp() const { return algo::layer_only(opt_.strategy); }
  const std::vector<algo::BlockParameters>& params() const { return tp() ? shards_ : p_.weights; }

  void prepare_backward() {
    const std::int64_t dim = p_.shape.attention.model_dim;
    dy_ = Tensor(DType::kF32, p_.batch, stack_.rows(), 1, dim);
    algo::copy_to_shard(p_.dy.view(), stack_.positions(), dy_.view());
    dx_ = Tensor(DType::kF32, p_.batch, stack_.rows(), 1, dim);
    dx_.fill_nan();
    for (int i = 0; i < p_.layers; ++i) {
      grads_.emplace_back(p_.shape, stack_.block(i).heads(), stack_.block(i).hidden());
      grads_.back().fill_nan();
    }
  }

  // The attention core as the registry counts it: this rank's heads, fp32 O (the layer's).
  algo::ProblemShape core_shape() const {
    const algo::HeadShard& h = stack_.block(0).heads();
    algo::ProblemShape s;
    s.batch = p_.batch;
    s.n_heads_q = h.q_count;
    s.n_heads_kv = h.kv_count;
    s.head_dim = p_.shape.attention.head_dim;
    s.element_bytes = dtype_size(opt_.dtype);
    s.output_bytes = sizeof(float);
    return s;
  }

  template <class Call>
  double timed(const std::string& label, Call&& call, algo::BlockStats& last) {
    bar_.begin(label, 0.0);
    c_.barrier();
    counted_.reset_link_bytes();
    const auto t0 = Clock::now();
    last = call();
    const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    links_[label.starts_with("forward") ? 0 : 1] = counted_.link_bytes();  // before the figures' collectives
    const double seconds = slowest(elapsed);
    bar_.end();
    return seconds;
  }

  BlockPassFigures figures(const algo::BlockStats& s, double seconds, const PassBytesSent& want, const char* pass,
                           std::vector<std::string>& mismatches) {
    BlockPassFigures f;
    f.seconds = seconds;
    f.attention = slowest(s.attention.attention_seconds);
    f.projections = slowest(s.attention.projection_seconds);
    f.mlp = slowest(s.mlp_seconds);
    f.norms = slowest(s.norm_seconds);
    f.collectives = slowest(s.attention.collective_seconds + s.collective_seconds);
    f.exposed = slowest(s.attention.attention.wait_seconds + s.attention.collective_seconds + s.collective_seconds);
    const PassBytesSent got = sent_of(s);
    BlockBytes& b = f.bytes;
    b.core = mean(static_cast<double>(got.core));
    b.core_spared = mean(static_cast<double>(got.spared));
    b.core_formula = mean(static_cast<double>(want.core));
    b.layer = mean(static_cast<double>(got.layer));
    b.layer_formula = mean(static_cast<double>(want.layer));
    b.mlp = mean(static_cast<double>(got.mlp));
    b.mlp_formula = mean(static_cast<double>(want.mlp));
    b.grads = mean(static_cast<double>(got.grads));
    b.grads_formula = mean(static_cast<double>(want.grads));
    check_bytes(got, want, pass, mismatches);
    const LinkBytes& links = links_[std::string_view(pass) == "forward" ? 0 : 1];
    f.intra_node_bytes = everyone(static_cast<double>(links.intra_node));
    f.inter_node_bytes = everyone(static_cast<double>(links.inter_node));
    return f;
  }

  // Every rank's bytes against its formula, exactly; rank 0 lists the parts that differ.
  void check_bytes(const PassBytesSent& got, const PassBytesSent& want, const char* pass,
                   std::vector<std::string>& mismatches) {
    struct Part {
      const char* name;
      std::uint64_t got, want;
    };
    const Part parts[] = {{"attention core (sent + spared by the mask) against the registry's bytes", got.core + got.spared, want.core},
                          {"layer collectives against expected_layer_traffic", got.layer, want.layer},
                          {"MLP collectives against expected_block_traffic", got.mlp, want.mlp},
                          {"weight-gradient all-reduces against both", got.grads, want.grads}};
    for (const Part& part : parts) {
      const std::vector<double> all_got = everyone(static_cast<double>(part.got));
      const std::vector<double> all_want = everyone(static_cast<double>(part.want));
      for (std::size_t r = 0; r < all_got.size(); ++r) {
        if (all_got[r] == all_want[r]) continue;
        mismatches.push_back(std::string(pass) + " " + part.name + ": rank " + std::to_string(r) + " sent " +
                             std::to_string(static_cast<std::uint64_t>(all_got[r])) + " bytes, formula " +
                             std::to_string(static_cast<std::uint64_t>(all_want[r])));
      }
    }
  }

  void gather(const Tensor& local, const Tensor& global) {
    if (opt_.strategy == algo::Strategy::kTpV1) {
      if (c_.rank() == 0) algo::copy_from_shard(local.view(), stack_.positions(), global.view());
    } else {
      algo::gather_rows(c_, local.view(), plan_, c_.rank() == 0 ? &global.view() : nullptr);
    }
  }

  std::vector<double> everyone(double value) {
    std::vector<double> all(static_cast<std::size_t>(c_.world_size()));
    c_.all_gather(&value, all.data(), sizeof(double));
    return all;
  }
  double slowest(double value) {
    const std::vector<double> all = everyone(value);
    return *std::max_element(all.begin(), all.end());
  }
  double mean(double value) {
    c_.all_reduce_sum(&value, 1);
    return value / c_.world_size();
  }
  static double median(std::vector<double> v) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }

  comm::Communicator& c_;
  const RunArgs& args_;
  const BlockProblem& p_;
  algo::LayerOptions opt_;
  std::vector<std::vector<std::int64_t>> plan_;
  std::vector<std::int64_t> lengths_;
  std::unique_ptr<comm::Communicator> slow_;  // links slowed to a modelled rate (--link-gbps)
  LinkCountingCommunicator counted_;          // tallies bytes per link class (intra/inter node)
  algo::BlockStack stack_;
  ProgressBar bar_;
  std::vector<algo::BlockParameters> shards_;  // tensor parallelism: this rank's heads and hidden units
  Tensor x_, y_, dy_, dx_;
  std::vector<algo::BlockParameters> grads_;
  LinkBytes links_[2];  // sent per link class in the last forward and the last backward
};

std::uint64_t inputs_hash(const BlockProblem& p) {
  std::uint64_t h = hash_bytes(p.x.data<char>(), p.x.bytes());
  for (const algo::BlockParameters& w : p.weights) {
    h = hash_bytes(w.attention().data(), w.attention().bytes(), h);
    h = hash_bytes(w.mlp_data(), w.mlp_count() * sizeof(float), h);
  }
  if (p.dy.bytes() > 0) h = hash_bytes(p.dy.data<char>(), p.dy.bytes(), h);
  return h;
}

}  // namespace

BlockRun execute_block(const RunArgs& args, const MemoryEstimate& estimate) {
  BlockRun out;
  out.problem = make_block_problem(args);
  const BlockProblem& p = out.problem;
  const LayerSetup setup = layer_setup(args, p.seqlen);
  const bool mpi = setup.mpi;
  const int ranks = setup.ranks;
  const algo::LayerOptions& opt = setup.options;

  BlockReport& report = out.report;
  report.strategy = algo::strategy_name(args.strategy);
  report.layout = algo::layout_name(args.layout);
  report.has_backward = args.backward;
  report.tolerance = args.dtype == DType::kF32 ? kToleranceF32 : kToleranceBF16;
  std::mutex root_mutex;
  reset_memory_peak();
  const std::vector<comm::Setting> settings = run_settings(args, inputs_hash(p));
  comm::run_world(ranks, [&](comm::Communicator& c) {
    apply_world_settings(c, args);
    comm::check_agreement(c, settings);  // before any rank starts work the others would not do
    check_block_runs(opt.strategy, p.shape, c.world_size(), opt.attention);
    algo::LayerOptions mine = opt;
    mine.attention.threads = threads_of_rank(args, c);
    BlockRank rank(c, args, p, mine);
    BlockReport figures;
    rank.run(figures);
    BlockResults results;
    rank.collect(results);
    if (c.rank() != 0) return;
    std::lock_guard lock(root_mutex);
    out.root = true;
    figures.strategy = report.strategy;
    figures.layout = report.layout;
    figures.has_backward = report.has_backward;
    figures.tolerance = report.tolerance;
    figures.backend = std::string(c.backend());
    figures.ranks = c.world_size();
    figures.node_of_rank = c.node_of_rank();
    report = std::move(figures);
    out.results = std::move(results);
  });
  if (!out.root) return out;  // an MPI rank other than 0: rank 0 reports
  report.peak_alloc_mb = static_cast<double>(memory_stats().peak) / 1e6;
  // Compared in the scope measured: the whole machine's thread ranks, or rank 0's process.
  constexpr double kMargin = 1.02;  // memory.cpp's
  const double process = estimate.per_process + std::max(estimate.per_rank, estimate.per_rank_held + estimate.root_extra);
  report.estimate_mb = (mpi ? kMargin * process : estimate.this_machine) / 1e6;
  report.rank_estimate_mb = estimate.per_rank / 1e6;
  report.saved_formula_mb = estimate.block_saved / 1e6;
  report.memory_scope = mpi ? "rank" : "process";
  verify_block(p, args, opt.attention.mask, out.results, report);
  return out;
}

int run_block(const RunArgs& args, const MemoryEstimate& estimate, Outputs& outputs) {
  BlockRun run = execute_block(args, estimate);
  if (!run.root) return 0;
  const BlockProblem& p = run.problem;
  if (!args.save_dir.empty()) {
    const std::filesystem::path dir(args.save_dir);
    auto save = [&](const std::filesystem::path& path, const float* data, const std::vector<std::int64_t>& shape) {
      outputs.write(path.string(), [&](const std::string& temporary) { write_npy(temporary, data, shape); });
    };
    const std::vector<std::int64_t> rows = {p.batch, p.seqlen, p.shape.attention.model_dim};
    save(dir / "y.npy", run.results.y.data<float>(), rows);
    if (args.backward) save(dir / "dx.npy", run.results.dx.data<float>(), rows);
    for (std::size_t i = 0; i < run.results.grads.size(); ++i) {
      const algo::BlockParameters& g = run.results.grads[i];
      const std::filesystem::path layer = dir / ("layer" + std::to_string(i));
      const algo::Parameters& a = g.attention();
      const std::int64_t dim = p.shape.attention.model_dim;
      const algo::MatrixView matrices[] = {a.wq(), a.wk(), a.wv(), a.wo()};
      for (std::size_t m = 0; m < 4; ++m)
        save(layer / block_gradient_files()[m], matrices[m].data, {matrices[m].rows, matrices[m].cols});
      save(layer / "dg1.npy", g.g1(), {dim});
      save(layer / "dg2.npy", g.g2(), {dim});
      for (auto [name, m] : {std::pair{"dw1.npy", g.w1()}, {"dw3.npy", g.w3()}, {"dw2.npy", g.w2()}})
        save(layer / name, m.data, {m.rows, m.cols});
    }
  }
  print_block(std::cout, args, p, run.report);
  if (!args.json_path.empty()) outputs.write_text(args.json_path, block_json(args, p, run.report));
  outputs.commit();
  if (run.report.passed()) return 0;
  if (!run.report.byte_mismatches.empty())
    std::cerr << "burst: FAILED: " << run.report.byte_mismatches.size() << " byte counts differ from their formulas: "
              << run.report.byte_mismatches.front() << "\n";
  if (!run.report.errors_pass())
    std::cerr << "burst: FAILED: block error over tolerance " << run.report.tolerance << "\n";
  return 1;
}

}  // namespace burst::cli
