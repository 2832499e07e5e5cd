// `burst run --block`'s inputs (random or .npy: X and every block's weights), the weight
// gradients gathered on rank 0 under tensor parallelism, and the check against the double
// block reference (reference/block.h).
#include "block_inputs.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "burst/error.h"
#include "burst/npy.h"
#include "layer_run.h"
#include "reference/block.h"

namespace burst::cli {
namespace {

// The reference is naive double attention and dgemm MLPs: affordable when every block's
// L b H N^2 d and L b N D F stay under 2^31 (about a second each here).
constexpr double kReferenceWork = 2147483648.0;

std::string layer_dir(const RunArgs& args, int layer) {
  return (std::filesystem::path(args.weights_dir) / ("layer" + std::to_string(layer))).string();
}

void read_vector(const std::string& dir, const char* name, float* into, std::int64_t count) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  const NpyArray a = read_npy(path, "--weights");
  BURST_CHECK(a.shape.size() == 1 && a.shape[0] == count, "--weights: ", path, " must be [", count,
              "] float32, got ", a.shape.size(), " dimensions",
              a.shape.size() == 1 ? " [" + std::to_string(a.shape[0]) + "]" : "");
  std::copy(a.data.begin(), a.data.end(), into);
}

algo::BlockParameters read_block_weights(const RunArgs& args, const algo::BlockShape& shape, int layer) {
  const std::string dir = layer_dir(args, layer);
  algo::BlockParameters w(shape, algo::all_heads(shape.attention), algo::all_hidden(shape));
  read_matrix(dir, "wq.npy", w.attention().wq());
  read_matrix(dir, "wk.npy", w.attention().wk());
  read_matrix(dir, "wv.npy", w.attention().wv());
  read_matrix(dir, "wo.npy", w.attention().wo());
  read_vector(dir, "g1.npy", w.g1(), shape.attention.model_dim);
  read_vector(dir, "g2.npy", w.g2(), shape.attention.model_dim);
  read_matrix(dir, "w1.npy", w.w1());
  read_matrix(dir, "w3.npy", w.w3());
  read_matrix(dir, "w2.npy", w.w2());
  return w;
}

// Copies rank r's hidden units (columns of W1 and W3, rows of W2) from its packed buffer
// `src` (laid out as `shard`'s) into `full`.
void place_hidden(const algo::BlockParameters& shard, const float* src, const algo::HiddenShard& h,
                  algo::BlockParameters& full) {
  const float* base = shard.mlp_data();
  const std::int64_t dim = full.w1().rows, f = full.w1().cols;
  const float* w1 = src + (shard.w1().data - base);
  const float* w3 = src + (shard.w3().data - base);
  const float* w2 = src + (shard.w2().data - base);
  for (std::int64_t i = 0; i < dim; ++i) {
    std::copy_n(w1 + i * h.count, h.count, full.w1().data + i * f + h.first);
    std::copy_n(w3 + i * h.count, h.count, full.w3().data + i * f + h.first);
  }
  std::copy_n(w2, h.count * dim, full.w2().data + h.first * dim);
}

double max_error(const reference::BlockGradients& ref, const algo::BlockParameters& g) {
  const algo::Parameters& a = g.attention();
  const std::int64_t dim = g.w1().rows;
  auto err = [](const std::vector<double>& r, const float* got) { return normwise(r, got, r.size()); };
  return std::max({err(ref.dwq, a.wq().data), err(ref.dwk, a.wk().data), err(ref.dwv, a.wv().data),
                   err(ref.dwo, a.wo().data), normwise(ref.dg1, g.g1(), static_cast<std::size_t>(dim)),
                   normwise(ref.dg2, g.g2(), static_cast<std::size_t>(dim)), err(ref.dw1, g.w1().data),
                   err(ref.dw3, g.w3().data), err(ref.dw2, g.w2().data)});
}

}  // namespace

std::int64_t mlp_dim_of(const RunArgs& args, std::int64_t model_dim) {
  if (args.weights_dir.empty()) return args.mlp_dim.value_or(block_mlp_dim(model_dim));
  const std::string path = (std::filesystem::path(layer_dir(args, 0)) / "w1.npy").string();
  const std::vector<std::int64_t> shape = read_npy_shape(path, "--weights");
  BURST_CHECK(shape.size() == 2, "--weights: ", path, " must be a [D, F] float32 array, got ", shape.size(),
              " dimensions");
  BURST_CHECK(!args.mlp_dim || *args.mlp_dim == shape[1], "--mlp-dim: ", args.mlp_dim.value_or(0),
              " disagrees with ", path, "'s F = ", shape[1]);
  return shape[1];
}

void check_block_runs(algo::Strategy strategy, const algo::BlockShape& shape, int ranks,
                      const algo::StrategyOptions& options) {
  const std::string why = algo::block_cannot_run(strategy, shape, ranks, options);
  if (why.empty()) return;
  // The attention layer's own reason names the heads; the MLP's, its width.
  algo::ProblemShape core;
  core.n_heads_q = shape.attention.heads;
  core.n_heads_kv = shape.attention.kv_heads;
  core.head_dim = shape.attention.head_dim;
  const bool hidden = algo::strategy_info(strategy).cannot_run(core, ranks, options, true).empty();
  fail(hidden ? "--mlp-dim: " : "--strategy: ", why);
}

BlockProblem make_block_problem(const RunArgs& args) {
  LayerProblem inputs = make_layer_inputs(args, "--block");
  BlockProblem p;
  p.shape.attention = inputs.shape;
  p.shape.mlp_dim = mlp_dim_of(args, inputs.shape.model_dim);
  p.layers = args.layers;
  p.batch = inputs.batch;
  p.seqlen = inputs.seqlen;
  p.x = std::move(inputs.x);
  p.dy = std::move(inputs.dy);
  p.from_files = inputs.from_files || !args.weights_dir.empty();
  for (int i = 0; i < p.layers; ++i) {
    p.weights.push_back(args.weights_dir.empty()
                            ? algo::random_block_parameters(p.shape, args.seed + 1 + static_cast<std::uint64_t>(i))
                            : read_block_weights(args, p.shape, i));
  }
  return p;
}

void expect_block_outputs(Outputs& outputs, const RunArgs& args) {
  for (int i = 0; i < args.layers; ++i) {
    const std::string dir = (std::filesystem::path(args.save_dir) / ("layer" + std::to_string(i))).string();
    outputs.expect_dir("--save", dir, block_gradient_files());
  }
}

const std::vector<std::string>& block_gradient_files() {
  static const std::vector<std::string> names = {"dwq.npy", "dwk.npy", "dwv.npy", "dwo.npy", "dg1.npy",
                                                 "dg2.npy", "dw1.npy", "dw3.npy", "dw2.npy"};
  return names;
}

algo::BlockParameters gather_block_grads(comm::Communicator& c, const algo::BlockParameters& grads,
                                         const algo::BlockShape& shape) {
  const std::int64_t dim = shape.attention.model_dim;
  algo::Parameters attention = gather_head_blocks(c, grads.attention(), shape.attention, dim);
  std::vector<float> all(grads.mlp_count() * static_cast<std::size_t>(c.world_size()));
  c.all_gather(grads.mlp_data(), all.data(), grads.mlp_count() * sizeof(float));
  if (c.rank() != 0) return {};
  algo::BlockParameters full(shape, algo::all_heads(shape.attention), algo::all_hidden(shape));
  full.attention() = std::move(attention);
  // The norms' gains: every rank holds the whole gradient (tp-v1 ran every token, tp-v3
  // all-reduced it).
  std::copy_n(grads.g1(), dim, full.g1());
  std::copy_n(grads.g2(), dim, full.g2());
  for (int r = 0; r < c.world_size(); ++r)
    place_hidden(grads, all.data() + static_cast<std::size_t>(r) * grads.mlp_count(),
                 algo::tensor_parallel_hidden(shape, c.world_size(), r), full);
  return full;
}

void verify_block(const BlockProblem& p, const RunArgs& args, const kernels::MaskSpec& mask, const BlockResults& got,
                  BlockReport& report) {
  const algo::LayerShape& a = p.shape.attention;
  const double l = p.layers, b = static_cast<double>(p.batch), n = static_cast<double>(p.seqlen);
  const double attention_work = l * b * static_cast<double>(a.heads) * n * n * static_cast<double>(a.head_dim);
  const double mlp_work = l * b * n * static_cast<double>(a.model_dim) * static_cast<double>(p.shape.mlp_dim);
  if (std::max(attention_work, mlp_work) > kReferenceWork) {
    char why[160];
    std::snprintf(why, sizeof why, "too large for the double reference (L b H N^2 d = %.3g, L b N D F = %.3g; at most 2^31)",
                  attention_work, mlp_work);
    report.not_verified = why;
    return;
  }
  reference::BlockInputs in;
  in.b = p.batch;
  in.n = p.seqlen;
  in.dim = a.model_dim;
  in.heads = a.heads;
  in.kv_heads = a.kv_heads;
  in.head_dim = a.head_dim;
  in.mlp_dim = p.shape.mlp_dim;
  in.rope_base = args.rope_base;
  in.norm_eps = p.shape.norm_eps;
  in.mask = mask;
  in.x = p.x.data<float>();
  for (const algo::BlockParameters& w : p.weights) {
    const algo::Parameters& at = w.attention();
    in.layers.push_back({at.wq().data, at.wk().data, at.wv().data, at.wo().data, w.g1(), w.g2(), w.w1().data,
                         w.w3().data, w.w2().data});
  }
  const bool backward = args.backward;
  const reference::BlockResult ref = reference::block(in, backward ? p.dy.data<float>() : nullptr);
  report.verified = true;
  report.y_error = normwise(ref.y, got.y.data<float>(), ref.y.size());
  if (!backward) return;
  report.backward_verified = true;
  report.dx_error = normwise(ref.dx, got.dx.data<float>(), ref.dx.size());
  report.dw_error = 0;
  for (std::size_t i = 0; i < ref.grads.size(); ++i)
    report.dw_error = std::max(report.dw_error, max_error(ref.grads[i], got.grads[i]));
}

}  // namespace burst::cli
