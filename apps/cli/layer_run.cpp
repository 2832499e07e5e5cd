#include "layer_run.h"
#include "layer_report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "burst/layer.h"
#include "burst/npy.h"
#include "burst/throttle.h"
#include "burst/world.h"
#include "burst/error.h"
#include "core/hash.h"
#include "distributed.h"
#include "problem.h"
#include "json.h"
#include "link_traffic.h"
#include "progress.h"
#include "kernels/blas.h"
#include "reference/layer.h"

namespace burst::cli {
Tensor normal_tensor(std::mt19937_64& rng, std::int64_t b, std::int64_t s, std::int64_t dim) {
  Tensor t(DType::kF32, b, s, 1, dim);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (std::int64_t i = 0; i < t.view().numel(); ++i) t.data<float>()[i] = normal(rng);
  return t;
}

void read_matrix(const std::string& dir, const char* name, const algo::MatrixView& into) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  const NpyArray a = read_npy(path, "--weights");
  BURST_CHECK(a.shape.size() == 2 && a.shape[0] == into.rows && a.shape[1] == into.cols, "--weights: ", path,
              " must be [", into.rows, ", ", into.cols, "] float32, got ", a.shape.size(), " dimensions",
              a.shape.size() == 2 ? " [" + std::to_string(a.shape[0]) + ", " + std::to_string(a.shape[1]) + "]" : "");
  std::copy(a.data.begin(), a.data.end(), into.data);
}

double normwise(const std::vector<double>& ref, const float* got, std::size_t count) {
  double scale = 0, diff = 0;
  for (std::size_t i = 0; i < count; ++i) {
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    scale = std::max(scale, std::fabs(ref[i]));
    diff = std::max(diff, std::fabs(got[i] - ref[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

// The full weight gradients on rank 0 from every rank's block of heads (tensor parallelism:
// rank r holds the columns of Wq, Wk, Wv and the rows of Wo of its heads). Collective.
algo::Parameters gather_head_blocks(comm::Communicator& c, const algo::Parameters& grads, const algo::LayerShape& shape,
                                    std::int64_t dim) {
  std::vector<float> all(grads.count() * static_cast<std::size_t>(c.world_size()));
  c.all_gather(grads.data(), all.data(), grads.bytes());
  if (c.rank() != 0) return {};
  algo::Parameters full(dim, shape.heads, shape.kv_heads, shape.head_dim);
  const std::int64_t d = shape.head_dim;
  for (int r = 0; r < c.world_size(); ++r) {
    const algo::HeadShard h = algo::tensor_parallel_heads(shape, c.world_size(), r);
    const float* src = all.data() + static_cast<std::size_t>(r) * grads.count();
    const algo::MatrixView block[] = {grads.wq(), grads.wk(), grads.wv(), grads.wo()};
    const algo::MatrixView whole[] = {full.wq(), full.wk(), full.wv(), full.wo()};
    const std::int64_t first[] = {h.q_first, h.kv_first, h.kv_first, h.q_first};
    for (int m = 0; m < 4; ++m) {
      const float* b = src + (block[m].data - grads.data());
      for (std::int64_t i = 0; i < block[m].rows; ++i) {
        float* to = m == 3 ? whole[m].data + (first[m] * d + i) * whole[m].ld : whole[m].data + i * whole[m].ld + first[m] * d;
        std::copy_n(b + i * block[m].ld, block[m].cols, to);
      }
    }
  }
  return full;
}

LayerProblem make_layer_inputs(const RunArgs& args, const char* mode) {
  BURST_CHECK(args.q_path.empty() && args.k_path.empty() && args.v_path.empty() && args.do_path.empty(),
              mode, ": reads X (--x) and weights (--weights), not --q/--k/--v/--do");
  BURST_CHECK(!args.seqlen_k, "--seqlen-k: ", mode, " attends over one sequence, got --seqlen-k ", *args.seqlen_k);
  BURST_CHECK(!args.scale, "--scale: ", mode, " uses 1/sqrt(head_dim)");
  LayerProblem p;
  p.shape.heads = args.heads;
  p.shape.kv_heads = args.kv_heads.value_or(args.heads);
  p.shape.head_dim = args.head_dim;
  BURST_CHECK(p.shape.heads % p.shape.kv_heads == 0, "--kv-heads: expected a divisor of --heads (", p.shape.heads,
              "), got ", p.shape.kv_heads);
  p.shape.model_dim = args.model_dim.value_or(p.shape.heads * p.shape.head_dim);
  p.batch = args.batch;
  p.seqlen = args.seqlen;
  std::mt19937_64 rng(args.seed);
  if (!args.x_path.empty()) {
    const NpyArray a = read_npy(args.x_path, "--x");
    BURST_CHECK(a.shape.size() == 3, "--x: expected a [b, s, D] float32 array, got ", a.shape.size(), " dimensions");
    for (const std::string& f : args.size_flags)
      BURST_CHECK(f != "--batch" && f != "--seqlen", f, ": the shape comes from --x, do not give ", f);
    BURST_CHECK(!args.model_dim || *args.model_dim == a.shape[2], "--model-dim: ", *args.model_dim,
                " disagrees with --x's last dimension ", a.shape[2]);
    p.batch = a.shape[0];
    p.seqlen = a.shape[1];
    p.shape.model_dim = a.shape[2];
    p.x = Tensor(DType::kF32, p.batch, p.seqlen, 1, p.shape.model_dim);
    std::copy(a.data.begin(), a.data.end(), p.x.data<float>());
    p.from_files = true;
  } else {
    p.x = normal_tensor(rng, p.batch, p.seqlen, p.shape.model_dim);
  }
  if (args.backward) p.dy = normal_tensor(rng, p.batch, p.seqlen, p.shape.model_dim);
  return p;
}

namespace {

using Clock = std::chrono::steady_clock;

// Normwise relative errors of fp32 results carry fp32 rounding only (observed ~1e-6); bf16 Q,
// K, V and dO add a rounding of 2^-9 relative each, amplified by the scores.
constexpr double kToleranceF32 = 1e-4;
constexpr double kToleranceBF16 = 3e-2;
// Affordable reference sizes: every output row when b h N^2 d <= 2^29 (else 32 sampled rows);
// the full backward when b h N^2 d <= 2^31.
constexpr double kAllRows = 536870912.0, kBackward = 2147483648.0;

LayerProblem make_layer_problem(const RunArgs& args) {
  LayerProblem p = make_layer_inputs(args, "--layer");
  if (!args.weights_dir.empty()) {
    p.weights = algo::Parameters(p.shape.model_dim, p.shape.heads, p.shape.kv_heads, p.shape.head_dim);
    read_matrix(args.weights_dir, "wq.npy", p.weights.wq());
    read_matrix(args.weights_dir, "wk.npy", p.weights.wk());
    read_matrix(args.weights_dir, "wv.npy", p.weights.wv());
    read_matrix(args.weights_dir, "wo.npy", p.weights.wo());
    p.from_files = true;
  } else {
    p.weights = algo::random_parameters(p.shape, args.seed + 1);
  }
  return p;
}
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

reference::LayerInputs reference_inputs(const LayerProblem& p, const RunArgs& args, const kernels::MaskSpec& mask) {
  reference::LayerInputs in;
  in.b = p.batch;
  in.n = p.seqlen;
  in.dim = p.shape.model_dim;
  in.heads = p.shape.heads;
  in.kv_heads = p.shape.kv_heads;
  in.head_dim = p.shape.head_dim;
  in.rope_base = args.rope_base;
  in.mask = mask;
  in.x = p.x.data<float>();
  in.wq = p.weights.wq().data;
  in.wk = p.weights.wk().data;
  in.wv = p.weights.wv().data;
  in.wo = p.weights.wo().data;
  return in;
}

// Y (and dX and the weight gradients when affordable) against the double layer reference:
// every row and gradient of small problems, sampled rows of Y otherwise.
void verify_layer(const LayerProblem& p, const RunArgs& args, const kernels::MaskSpec& mask, const Tensor& y,
                  const Tensor& dx, const algo::Parameters& g, LayerReport& report) {
  const reference::LayerInputs in = reference_inputs(p, args, mask);
  const double work = static_cast<double>(p.batch * p.shape.heads) * static_cast<double>(p.seqlen) *
                      static_cast<double>(p.seqlen) * static_cast<double>(p.shape.head_dim);
  const std::size_t row = static_cast<std::size_t>(p.shape.model_dim);
  if (args.backward && work <= kBackward) {
    const reference::LayerResult ref = reference::layer(in, p.dy.data<float>());
    report.verified_rows = p.seqlen;
    report.y_error = normwise(ref.y, y.data<float>(), ref.y.size());
    report.dx_error = normwise(ref.dx, dx.data<float>(), ref.dx.size());
    report.dw_error = std::max({normwise(ref.dwq, g.wq().data, ref.dwq.size()), normwise(ref.dwk, g.wk().data, ref.dwk.size()),
                                normwise(ref.dwv, g.wv().data, ref.dwv.size()), normwise(ref.dwo, g.wo().data, ref.dwo.size())});
    report.backward_verified = true;
    return;
  }
  std::vector<std::int64_t> rows;
  const std::int64_t count = work <= kAllRows ? p.seqlen : std::min<std::int64_t>(p.seqlen, 32);
  for (std::int64_t i = 0; i < count; ++i) rows.push_back(count == p.seqlen ? i : i * (p.seqlen - 1) / (count - 1));
  const reference::LayerResult ref = reference::layer_rows(in, rows);
  std::vector<float> got(ref.y.size());
  for (std::int64_t ib = 0; ib < p.batch; ++ib)
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy_n(y.view().row<float>(ib, rows[i], 0), row, got.data() + (static_cast<std::size_t>(ib) * rows.size() + i) * row);
  report.verified_rows = static_cast<std::int64_t>(rows.size());
  report.y_error = normwise(ref.y, got.data(), got.size());
}

}  // namespace

int run_layer(const RunArgs& args, double memory_estimate_bytes, Outputs& outputs) {
  const LayerProblem p = make_layer_problem(args);
  const LayerSetup setup = layer_setup(args, p.seqlen);
  const bool mpi = setup.mpi;
  const int ranks = setup.ranks;
  const algo::LayerOptions& opt = setup.options;

  LayerReport report;
  report.strategy = algo::strategy_name(args.strategy);
  report.layout = algo::layout_name(args.layout);
  report.has_backward = args.backward;
  report.tolerance = args.dtype == DType::kF32 ? kToleranceF32 : kToleranceBF16;
  Tensor y_global, dx_global;
  algo::Parameters grads_global;
  bool root_here = false;
  std::mutex root_mutex;
  reset_memory_peak();

  const comm::LinkModel link = link_model_of(args);
  // Every rank builds or reads the global inputs: a hash shows they hold the same ones.
  std::uint64_t inputs_hash = hash_bytes(p.x.data<char>(), p.x.bytes());
  inputs_hash = hash_bytes(p.weights.data(), p.weights.bytes(), inputs_hash);
  if (p.dy.bytes() > 0) inputs_hash = hash_bytes(p.dy.data<char>(), p.dy.bytes(), inputs_hash);
  const std::vector<comm::Setting> settings = run_settings(args, inputs_hash);
  comm::run_world(ranks, [&](comm::Communicator& c) {
    apply_world_settings(c, args);
    comm::check_agreement(c, settings);  // before any rank starts work the others would not do
    algo::LayerOptions mine = opt;
    mine.attention.threads = threads_of_rank(args, c);
    // The layer runs on a wrapper that tallies bytes per link class (intra/inter node).
    // Links slowed to a modelled rate when asked (--link-gbps, burst/throttle.h).
    const std::unique_ptr<comm::Communicator> slow = link.active() ? comm::throttled(c, link) : nullptr;
    LinkCountingCommunicator counted(slow ? *slow : c);
    algo::AttentionLayer layer(counted, p.shape, mine);
    const bool tp = algo::layer_only(args.strategy);
    const algo::Parameters shard = tp ? algo::shard_parameters(p.weights, p.shape, layer.heads()) : algo::Parameters();
    const algo::Parameters& params = tp ? shard : p.weights;
    const std::int64_t rows = layer.rows(), dim = p.shape.model_dim;
    Tensor x(DType::kF32, p.batch, rows, 1, dim), y(DType::kF32, p.batch, rows, 1, dim);
    algo::copy_to_shard(p.x.view(), layer.positions(), x.view());
    y.fill_nan();

    auto slowest = [&](double seconds) {
      std::vector<double> all(static_cast<std::size_t>(c.world_size()));
      c.all_gather(&seconds, all.data(), sizeof(double));
      return *std::max_element(all.begin(), all.end());
    };
    auto mean = [&](double value) {
      double sum = value;
      c.all_reduce_sum(&sum, 1);
      return sum / c.world_size();
    };
    ProgressBar bar(c.rank() == 0 && ProgressBar::wanted(args.progress));
    auto timed = [&](auto&& call, algo::LayerStats& last, const char* pass) {
      std::vector<double> times;
      for (int i = 0; i < args.repeat; ++i) {
        bar.begin(std::string(pass) + " " + std::to_string(i + 1) + "/" + std::to_string(args.repeat),
                  times.empty() ? 0.0 : times.back());
        c.barrier();
        const auto t0 = Clock::now();
        last = call();
        times.push_back(slowest(std::chrono::duration<double>(Clock::now() - t0).count()));
        bar.end();
      }
      return median(times);
    };
    std::vector<std::int64_t> lengths;
    for (const auto& s : algo::shard_plan(p.seqlen, c.world_size(), opt.attention.layout, opt.attention.mask))
      lengths.push_back(static_cast<std::int64_t>(s.size()));
    const algo::LayerTraffic formula = algo::expected_layer_traffic(args.strategy, p.shape, p.batch, lengths, c.rank());
    auto figures = [&](const algo::LayerStats& s, double seconds, double layer_formula, double grad_formula) {
      PassFigures f;
      f.seconds = seconds;
      f.attention = slowest(s.attention_seconds);
      f.projections = slowest(s.projection_seconds);
      f.collectives = slowest(s.collective_seconds);
      f.exposed = slowest(s.attention.wait_seconds);
      f.core_bytes = mean(static_cast<double>(s.attention.bytes_sent));
      f.layer_bytes = mean(static_cast<double>(s.layer_bytes_sent));
      f.layer_formula = mean(layer_formula);
      f.grad_bytes = mean(static_cast<double>(s.grad_bytes_sent));
      f.grad_formula = mean(grad_formula);
      for (const auto& [bytes, into] : {std::pair{counted.link_bytes().intra_node, &f.intra_node_bytes},
                                       std::pair{counted.link_bytes().inter_node, &f.inter_node_bytes}}) {
        into->resize(static_cast<std::size_t>(c.world_size()));
        const double mine_bytes = static_cast<double>(bytes);
        c.all_gather(&mine_bytes, into->data(), sizeof(double));
      }
      return f;
    };

    algo::LayerStats fs;
    const double forward_seconds = timed([&] {
      counted.reset_link_bytes();
      return layer.forward(params, x.view(), y.view());
    }, fs, "forward");
    const PassFigures forward = figures(fs, forward_seconds, static_cast<double>(formula.forward), 0.0);
    PassFigures backward;
    Tensor dx;
    algo::Parameters grads(dim, layer.heads().q_count, layer.heads().kv_count, p.shape.head_dim);
    if (args.backward) {
      Tensor dy(DType::kF32, p.batch, rows, 1, dim);
      algo::copy_to_shard(p.dy.view(), layer.positions(), dy.view());
      dx = Tensor(DType::kF32, p.batch, rows, 1, dim);
      dx.fill_nan();
      grads.fill_nan();
      algo::LayerStats bs;
      const double backward_seconds = timed([&] {
        counted.reset_link_bytes();
        return layer.backward(params, dy.view(), dx.view(), grads);
      }, bs, "backward");
      backward = figures(bs, backward_seconds, static_cast<double>(formula.backward), static_cast<double>(formula.grads));
    }
    const double saved_mb = mean(static_cast<double>(layer.saved_bytes()) / 1e6);
    const double param_mb = mean(static_cast<double>(params.bytes()) / 1e6);

    // Rank 0 collects Y, dX and the full weight gradients in global order.
    const bool root = c.rank() == 0;
    const auto plan = algo::shard_plan(p.seqlen, c.world_size(), opt.attention.layout, opt.attention.mask);
    Tensor y_all, dx_all;
    if (root) y_all = Tensor(DType::kF32, p.batch, p.seqlen, 1, dim);
    if (root && args.backward) dx_all = Tensor(DType::kF32, p.batch, p.seqlen, 1, dim);
    auto collect = [&](const Tensor& local, const Tensor& global) {
      if (args.strategy == algo::Strategy::kTpV1) {
        if (root) algo::copy_from_shard(local.view(), layer.positions(), global.view());
      } else {
        algo::gather_rows(c, local.view(), plan, root ? &global.view() : nullptr);
      }
    };
    collect(y, y_all);
    if (args.backward) collect(dx, dx_all);
    algo::Parameters full;
    if (args.backward) {
      if (tp) {
        full = gather_head_blocks(c, grads, p.shape, dim);
      } else if (root) {
        full = std::move(grads);
      }
    }
    if (root) {
      std::lock_guard lock(root_mutex);
      root_here = true;
      report.backend = std::string(c.backend());
      report.ranks = c.world_size();
      report.node_of_rank = c.node_of_rank();
      report.threads = mine.attention.threads;
      report.forward = forward;
      report.backward = backward;
      report.saved_mb = saved_mb;
      report.param_mb = param_mb;
      y_global = std::move(y_all);
      dx_global = std::move(dx_all);
      grads_global = std::move(full);
    }
  });
  if (!root_here) return 0;  // an MPI rank other than 0: rank 0 reports
  report.peak_alloc_mb = static_cast<double>(memory_stats().peak) / 1e6;
  report.estimate_mb = memory_estimate_bytes / 1e6;
  report.memory_scope = mpi ? "rank" : "process";

  if (!args.save_dir.empty()) {
    const std::vector<std::int64_t> shape = {p.batch, p.seqlen, p.shape.model_dim};
    auto save = [&](const char* name, const float* data, const std::vector<std::int64_t>& s) {
      outputs.write((std::filesystem::path(args.save_dir) / name).string(),
                    [&](const std::string& temporary) { write_npy(temporary, data, s); });
    };
    save("y.npy", y_global.data<float>(), shape);
    if (args.backward) {
      save("dx.npy", dx_global.data<float>(), shape);
      const algo::Parameters& g = grads_global;
      for (auto [name, m] : {std::pair{"dwq.npy", g.wq()}, {"dwk.npy", g.wk()}, {"dwv.npy", g.wv()}, {"dwo.npy", g.wo()}})
        save(name, m.data, {m.rows, m.cols});
    }
  }

  verify_layer(p, args, opt.attention.mask, y_global, dx_global, grads_global, report);
  print_layer(std::cout, args, p, report);
  if (!args.json_path.empty()) outputs.write_text(args.json_path, layer_json(args, p, report));
  outputs.commit();
  if (report.passed()) return 0;
  std::cerr << "burst: FAILED: layer error over tolerance " << report.tolerance << "\n";
  return 1;
}

}  // namespace burst::cli
