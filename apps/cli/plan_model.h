// The cost model behind `burst plan`: for a described cluster and model shape it predicts,
// per rank, the time, the bytes sent and the memory of every strategy, and recommends one.
//
//   compute        FLOPs / rate (attention FLOPs as the library counts them: 4 b h s_q s_k d
//                  times the mask's visible fraction, backward 2.5x; projections and MLP as GEMMs)
//   communication  bytes / link bandwidth + latency x messages, per level: a hop inside a node
//                  uses the intra-node link, one between nodes the inter-node link
//   overlap        per ring step max(compute, transfer) (the paper's double buffering);
//                  collectives (all-to-all, all-gather, reduce-scatter, all-reduce) are not hidden
//   bytes          the library's own formulas (algo::backward_bytes, algo::choose_scheme,
//                  algo::expected_layer_traffic and docs/burst.md), exact per rank: tests compare
//                  them with the communicators' counters
//   memory         weights, activations, K/V cache and each strategy's buffers (estimates)
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "burst/burst_attention.h"
#include "burst/layer.h"
#include "burst/strategy.h"

namespace burst::cli::plan {

// One level of the interconnect as one rank sees it: what a single flow of this rank gets.
struct Link {
  double bandwidth = 0;  // bytes/s in one direction
  double latency = 0;    // seconds per message
  double seconds(double bytes, double messages) const { return bytes / bandwidth + latency * messages; }
};

struct Cluster {
  std::string name;
  std::string description;
  int nodes = 1;
  int ranks_per_node = 1;
  // Compute units per node (CPU cores; GPUs: one per rank). Ranks beyond them share them.
  int compute_slots = 1;
  // Rates of one compute slot, FLOP/s as counted above, for the attention core's dtype.
  double attention_forward_flops = 0;
  double attention_backward_flops = 0;
  // With a causal mask (FLOPs at the visible fraction); 0: the rates above.
  double attention_forward_flops_causal = 0;
  double attention_backward_flops_causal = 0;
  double gemm_flops = 0;          // projections and MLP
  double memory_bandwidth = 0;    // bytes/s of one rank: ring-rsa's materialised score passes
  Link intra, inter;
  double memory_bytes = 0;        // per rank
  // Whether a posted transfer moves while the rank computes (GPUs, MPI with the progress
  // hook). The in-process backend copies inside the posting call, so its ring steps add up.
  bool overlap = true;

  int ranks() const { return nodes * ranks_per_node; }
  // Threads of one rank (burst run shares the slots among the ranks of a node) and the
  // FLOP/s multiplier of one rank: its threads, scaled down when the node is oversubscribed.
  int threads_per_rank() const;
  double rank_share() const;
};

struct ModelShape {
  std::string name;
  int layers = 1;
  std::int64_t heads = 0, kv_heads = 0, head_dim = 0, model_dim = 0;
  std::int64_t mlp_dim = 0;  // SwiGLU width (three D x F matrices); 0: no MLP
  std::int64_t vocab = 0;    // embedding and output matrices (memory only)
  algo::LayerShape layer() const { return {model_dim, heads, kv_heads, head_dim}; }
};

// What is predicted: the attention core alone (burst run), one attention layer (burst run
// --layer), or the whole model (first-token latency: every layer's forward).
enum class Scope { kCore, kLayer, kModel };
std::string scope_name(Scope scope);

struct Workload {
  std::int64_t batch = 1;
  std::int64_t seqlen = 0;
  bool causal = false;
  bool backward = false;           // forward + backward (training step) instead of forward only
  Scope scope = Scope::kModel;
  std::size_t element_bytes = 2;   // the attention core's q, k, v, dO
  std::size_t output_bytes = 2;    // the core's O (burst run: the input dtype; the layer: fp32)
  std::size_t weight_bytes = 2;    // bytes per parameter (model scope)
  std::size_t activation_bytes = 2;  // X, MLP activations (model scope)
};

// The strategies the planner compares: the library's, with the double ring as a separate one.
enum class Choice { kBurst, kBurstDouble, kRing, kRingRsa, kUlysses, kUsp, kAllGather, kTpV1, kTpV3 };
const std::vector<Choice>& all_choices();
std::string choice_name(Choice choice);  // burst, burst-double, ring, ring-rsa, ...
Choice parse_choice(const std::string& text, const std::string& what);
algo::Strategy library_strategy(Choice choice);

// The attention core's shape on the wire.
struct CoreShape {
  std::int64_t batch = 1, heads = 0, kv_heads = 0, head_dim = 0;
  std::size_t element_bytes = 4, output_bytes = 4;
  int ulysses_degree = 1;  // usp
};

// Bytes one rank sends in the attention core, exactly as the library's counters record them,
// for shards of `lengths` tokens (every rank's, in rank order) and rank `rank`. The burst
// backward scheme is the library's choice (algo::choose_scheme); ring always passes K/V.
// burst-double sends the single ring's bytes (exact for equal shards, as the library's tests say).
// Zero for tp-v1 and tp-v3 (their attention is local).
struct CoreBytes {
  std::uint64_t forward = 0, backward = 0;
  // Parts of the backward: what travels P - 1 hops and what trails (accumulators, results back).
  std::uint64_t backward_bundle = 0, backward_trailing = 0;
  algo::BackwardScheme scheme = algo::BackwardScheme::kAuto;
};
CoreBytes core_bytes(Choice choice, const std::vector<std::int64_t>& lengths, int rank, const CoreShape& shape);

// The attention layer's bytes per rank: its core plus algo::expected_layer_traffic.
struct LayerBytes {
  std::uint64_t forward = 0, backward = 0, grads = 0;
};
LayerBytes layer_bytes(Choice choice, const algo::LayerShape& shape, std::int64_t batch,
                       const std::vector<std::int64_t>& lengths, int rank, std::size_t element_bytes);

// Why a strategy cannot run a problem ("" when it can): head counts that do not split.
std::string infeasible_reason(Choice choice, const ModelShape& model, const Cluster& cluster, Scope scope);
// Ranks per Ulysses group the planner gives usp: the largest divisor of both head counts, of
// the ranks and of the ranks per node (the all-to-all stays inside a node).
int usp_degree(const ModelShape& model, const Cluster& cluster);

struct Prediction {
  Choice choice = Choice::kBurst;
  std::string infeasible;   // non-empty: cannot run (the reason)
  double forward_seconds = 0, backward_seconds = 0;
  double compute_seconds = 0;   // of both passes
  double comm_seconds = 0;      // wire time of both passes, hidden or not
  double exposed_seconds = 0;   // time beyond compute (communication not hidden)
  double forward_bytes = 0, backward_bytes = 0;  // per rank, the whole scope (all layers)
  double inter_bytes = 0;       // of those, over the inter-node link
  double memory_bytes = 0;      // peak per rank (estimate)
  bool out_of_memory = false;
  double seconds() const { return forward_seconds + backward_seconds; }
  bool runs() const { return infeasible.empty() && !out_of_memory; }
};

Prediction predict(Choice choice, const Cluster& cluster, const ModelShape& model, const Workload& work);

// The fastest strategy that runs and fits; ties go to fewer bytes. Returns the index into
// `predictions`, or -1 when none runs.
int recommend(const std::vector<Prediction>& predictions);

// Presets. Clusters: "8xA100-PCIe" (the paper's), "4x8xA100-RoCE600"; "this" comes from a
// calibration (plan_calibrate.h). Models: "llama2-7b", "llama2-13b".
std::vector<std::string> cluster_preset_names();
Cluster cluster_preset(const std::string& name, const std::string& what);
std::vector<std::string> model_preset_names();
ModelShape model_preset(const std::string& name, const std::string& what);

}  // namespace burst::cli::plan
