#include "block_model.h"

#include <algorithm>

namespace burst::plan {
namespace {

algo::BlockShape block_shape(const ModelShape& m) {
  algo::BlockShape s;
  s.attention = m.layer();
  s.mlp_dim = m.mlp_dim;
  return s;
}

double total(const std::vector<algo::MemoryPart>& parts) {
  double sum = 0;
  for (const algo::MemoryPart& p : parts) sum += p.bytes;
  return sum;
}

}  // namespace

BlockFigures block_figures(algo::Strategy strategy, const ModelShape& m, const Workload& w,
                           const std::vector<std::int64_t>& lengths, const algo::StrategyOptions& options) {
  const algo::BlockShape shape = block_shape(m);
  const int p = static_cast<int>(lengths.size());
  BlockFigures f;
  for (int r = 0; r < p; ++r) {
    const algo::LayerTraffic l = algo::expected_layer_traffic(strategy, shape.attention, w.batch, lengths, r);
    const algo::BlockTraffic b = algo::expected_block_traffic(strategy, shape, w.batch, lengths, r);
    f.layer_forward += static_cast<double>(l.forward) / p;
    f.layer_backward += static_cast<double>(l.backward) / p;
    f.mlp_forward += static_cast<double>(b.forward) / p;
    f.mlp_backward += static_cast<double>(b.backward) / p;
    f.grads += static_cast<double>(l.grads + b.grads) / p;
  }
  // Sequence parallelism: every weight over 1/P of the tokens; tensor parallelism: 1/P of the
  // heads and hidden units over every token. Either way 1/P of the FLOPs (heads evenly split).
  const bool tp = algo::layer_only(strategy);
  const algo::HeadShard heads = tp ? algo::tensor_parallel_heads(shape.attention, p, 0) : algo::all_heads(shape.attention);
  const double rows = tp ? static_cast<double>(w.seqlen) : static_cast<double>(w.seqlen) / p;
  const double b = static_cast<double>(w.batch), dim = static_cast<double>(m.model_dim), d = static_cast<double>(m.head_dim);
  const double hq = static_cast<double>(heads.q_count), g = static_cast<double>(heads.kv_count);
  const double f_r = static_cast<double>(m.mlp_dim) / (tp ? p : 1);
  f.gemm_flops = 2 * b * rows * dim * (hq + 2 * g) * d + 2 * b * rows * hq * d * dim + 6 * b * rows * dim * f_r;
  const algo::LayerMemory mem = algo::block_memory(strategy, shape, w.batch, lengths,
                                                   w.element_bytes == 2 ? DType::kBF16 : DType::kF32, w.backward,
                                                   options, {}, std::max(1, m.layers));
  f.memory = mem.parameters + std::max(total(mem.forward), total(mem.backward));
  return f;
}

std::string block_infeasible(algo::Strategy strategy, const ModelShape& m, int ranks, const algo::StrategyOptions& options) {
  if (m.mlp_dim <= 0) return "the block needs an MLP width (--mlp-dim)";
  return algo::block_cannot_run(strategy, block_shape(m), ranks, options);
}

}  // namespace burst::plan
