#include "burst/plan.h"

#include <algorithm>

#include "burst/error.h"

namespace burst::plan {

// Presets. Figures are stated assumptions, written next to each value; docs/plan.md says
// where they come from.
std::vector<std::string> cluster_preset_names() { return {"8xA100-PCIe", "4x8xA100-RoCE600", "this"}; }

Cluster cluster_preset(const std::string& name, const std::string& what) {
  Cluster c;
  c.name = name;
  // A100: 312 TFLOP/s bf16 dense peak. FlashAttention-2 reaches roughly half of it in the
  // forward and somewhat less in the backward at d = 128; large GEMMs about 70%.
  c.attention_forward_flops = 160e12;
  c.attention_backward_flops = 120e12;
  c.gemm_flops = 220e12;
  if (name == "8xA100-PCIe") {
    c.description = "1 node x 8 A100 40GB, PCIe 4.0 between the GPUs (the paper's first setup)";
    c.nodes = 1;
    c.ranks_per_node = 8;
    c.compute_slots = 8;
    c.memory_bandwidth = 1.555e12;
    c.memory_bytes = 40e9;
    // PCIe 4.0 x16 carries 32 GB/s raw per direction; eight GPUs behind shared switches and
    // the CPUs' root ports leave a ring about 12 GB/s per rank, at ~10 us per message.
    c.intra = {12e9, 10e-6};
    c.inter = c.intra;
    return c;
  }
  if (name == "4x8xA100-RoCE600") {
    c.description = "4 nodes x 8 A100 80GB, NVLink inside a node, 600 Gb/s RoCE per node between nodes";
    c.nodes = 4;
    c.ranks_per_node = 8;
    c.compute_slots = 8;
    c.memory_bandwidth = 2.0e12;
    c.memory_bytes = 80e9;
    // NVLink 3: 300 GB/s per direction per GPU; rings reach ~200 GB/s. 600 Gb/s per node is
    // 75 GB/s, shared by the node's 8 ranks (9.4 GB/s each when all send across at once, the
    // whole of it for a single ring's one crossing hop), ~10 us per message.
    c.intra = {200e9, 5e-6};
    c.inter = {600e9 / 8, 10e-6};
    c.nics_per_node = 1;
    return c;
  }
  throw Error(what + ": expected one of 8xA100-PCIe, 4x8xA100-RoCE600, this, got '" + name + "'");
}

std::vector<std::string> model_preset_names() { return {"llama2-7b", "llama2-13b"}; }

ModelShape model_preset(const std::string& name, const std::string& what) {
  ModelShape m;
  m.name = name;
  m.head_dim = 128;
  m.vocab = 32000;
  if (name == "llama2-7b") {
    m.layers = 32;
    m.heads = m.kv_heads = 32;
    m.model_dim = 4096;
    m.mlp_dim = 11008;
    return m;
  }
  if (name == "llama2-13b") {
    m.layers = 40;
    m.heads = m.kv_heads = 40;
    m.model_dim = 5120;
    m.mlp_dim = 13824;
    return m;
  }
  throw Error(what + ": expected llama2-7b, llama2-13b or custom, got '" + name + "'");
}

Cluster resize(Cluster c, int nodes, int ranks, const std::string& what) {
  BURST_CHECK(nodes >= 1 && ranks >= 1 && ranks % nodes == 0, what, ": expected a multiple of the ", nodes,
              " nodes, got ", ranks);
  const int per_node = ranks / nodes;
  // GPUs: one compute slot per rank. Pretended nodes (burst run --ranks-per-node) share this
  // machine's cores (its memory is already divided among the ranks).
  c.compute_slots = c.slot_per_rank ? per_node : std::max(1, c.compute_slots / nodes);
  c.nodes = nodes;
  c.ranks_per_node = per_node;
  return c;
}

}  // namespace burst::plan
