// The cost model of the strategies (`burst plan`, Python's burst.plan): for a described
// cluster and model shape it predicts, per rank, the time, the bytes sent and the memory of
// every strategy, and recommends one.
//
//   compute        FLOPs / rate (attention FLOPs as the library counts them: 4 b h s_q s_k d
//                  times the mask's visible fraction, backward 2.5x; projections and MLP as GEMMs)
//   communication  bytes / link bandwidth + latency x messages, per level: a hop inside a node
//                  uses the intra-node link, one between nodes the inter-node link
//   overlap        per ring step max(compute, transfer) (the paper's double buffering);
//                  collectives (all-to-all, all-gather, reduce-scatter, all-reduce) are not hidden
//   bytes          the strategy registry's formulas (burst/strategy.h) and
//                  algo::expected_layer_traffic, exact per rank: the tests hold them to the
//                  communicators' counters
//   memory         the registry's per-rank memory (algo::rank_memory, algo::layer_memory), and
//                  for the whole model its weights, activations and K/V cache (estimates)
//
// Calibration measures this machine (kernels, GEMM, memory, a ring step between two ranks)
// and turns the figures into the cluster "this".
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "burst/communicator.h"
#include "burst/dtype.h"
#include "burst/layer.h"
#include "burst/layout.h"
#include "burst/strategy.h"

namespace burst::plan {

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
  // With a causal mask (FLOPs at the visible fraction); 0: the rates above. Not used when the
  // tiles below are modelled.
  double attention_forward_flops_causal = 0;
  double attention_backward_flops_causal = 0;
  // The kernels' tile (query rows x key columns) and what a partially masked tile costs
  // beyond its visible pairs, in pairs at the full rates above (forward, backward): a masked
  // call takes (visible pairs + extra x partially masked tiles) x FLOPs per pair / rate, so
  // full blocks run at the full rate and only the mask's edges cost more. tile_rows 0: not
  // modelled.
  int tile_rows = 0, tile_cols = 0;
  double masked_tile_forward = 0, masked_tile_backward = 0;
  double gemm_flops = 0;          // projections and MLP
  double memory_bandwidth = 0;    // bytes/s of one rank: ring-rsa's materialised score passes
  // ring-rsa's measured rates, FLOPs counted as the attention kernels' without a mask (GEMMs
  // and score passes together); 0: modelled from gemm_flops and memory_bandwidth instead.
  double ring_rsa_forward_flops = 0, ring_rsa_backward_flops = 0;
  Link intra, inter;
  // 0: `inter` is every rank's own link. K > 0: `inter` is one NIC and a node has K of them,
  // so when more of its ranks send across at once (the double ring, Ulysses' all-to-all, USP's
  // rings) each flow gets inter x K / flows; a single ring crosses from one rank per node.
  int nics_per_node = 0;
  double memory_bytes = 0;        // per rank
  // Whether a posted transfer moves while the rank computes (GPUs, MPI with the progress
  // hook). The in-process backend copies inside the posting call, so its ring steps add up.
  bool overlap = true;
  // Every rank has a compute slot of its own (a GPU); false: the ranks of a node share its
  // cores (this machine's CPUs).
  bool slot_per_rank = true;
  // When a node has more rank threads than compute slots: what a slot shared by two threads
  // gives, relative to one thread on it (time slicing costs caches and switches). 1: nothing
  // lost.
  double shared_slot_efficiency = 1.0;

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
// --layer), the whole model (first-token latency: every layer's forward), or a stack of
// ModelShape::layers transformer blocks as burst run --block runs them (burst/block.h: fp32,
// bytes from expected_layer_traffic and expected_block_traffic, memory from block_memory).
enum class Scope { kCore, kLayer, kModel, kBlock };
std::string scope_name(Scope scope);  // "core", "layer", "model", "block"
Scope parse_scope(const std::string& text, const std::string& what);

struct Workload {
  std::int64_t batch = 1;
  std::int64_t seqlen = 0;
  bool causal = false;
  // A sliding window: keys in [q - window_left, q + window_right]; a negative side is
  // unbounded (kernels::MaskSpec).
  std::int64_t window_left = -1, window_right = -1;
  bool backward = false;           // forward + backward (training step) instead of forward only
  Scope scope = Scope::kModel;
  std::size_t element_bytes = 2;   // the attention core's q, k, v, dO (2: bf16, 4: fp32)
  std::size_t output_bytes = 2;    // the core's O (burst run: the input dtype; the layer: fp32)
  std::size_t weight_bytes = 2;    // bytes per parameter (model scope)
  std::size_t activation_bytes = 2;  // X, MLP activations (model scope)
  kernels::MaskSpec mask() const {
    kernels::MaskSpec m;
    m.causal = causal;
    m.window_left = window_left;
    m.window_right = window_right;
    return m;
  }
};

// A workload in `dtype`: the attention core's inputs, the weights and activations. burst run
// writes O in the input dtype; the layer keeps an fp32 O and fp32 rows of X.
Workload make_workload(std::int64_t batch, bool causal, bool backward, Scope scope, DType dtype);

// A strategy the planner compares: a registry entry, with BurstAttention's double ring as a
// candidate of its own ("burst-double"), USP with a chosen Ulysses degree ("usp:4") and, for
// the strategies whose work per rank depends on it, the token layout under a mask (causal,
// a window: "burst@striped"; zigzag, burst run's default for causal problems, is left
// unnamed). Without a mask every layout gives every rank the same work: the planner runs
// contiguous.
struct Candidate {
  algo::Strategy strategy = algo::Strategy::kBurst;
  bool double_ring = false;
  int ulysses_degree = 0;  // usp: ranks per Ulysses group; 0: usp_degree's choice
  algo::Layout layout = algo::Layout::kZigzag;
  std::string name() const;
  bool operator==(const Candidate&) const = default;
};
// The layouts the planner models (contiguous, zigzag, striped), and whether a strategy's work
// per rank depends on them: the rings (burst, ring, usp's ring across groups) and all-gather,
// whose ranks compute their own queries. The others compute whole rows or every score.
std::vector<algo::Layout> planned_layouts();
bool layout_matters(algo::Strategy strategy);
// A layout_name among planned_layouts(); throws naming `what` and listing them otherwise.
algo::Layout parse_planned_layout(const std::string& text, const std::string& what);
// `choices` with every candidate whose work depends on the layout (layout_matters) set to
// `layout`; the others as they are.
std::vector<Candidate> with_layout(std::vector<Candidate> choices, algo::Layout layout);
// Every candidate, in the order tables list them: burst, burst-double, ring, ring-rsa,
// ulysses, usp, allgather, tp-v1, tp-v3 (local runs on one rank and is not planned).
const std::vector<Candidate>& candidates();
// Throws naming `what` and listing the names when `text` names no candidate; "usp:U" is usp
// with U ranks per Ulysses group.
Candidate parse_candidate(const std::string& text, const std::string& what);
// `choices` with usp (degree 0) replaced by usp:U for every U from 2 to P / 2 that divides the
// ranks and both head counts: the Ulysses degree becomes a choice the ranking makes.
std::vector<Candidate> with_ulysses_degrees(const std::vector<Candidate>& choices, const ModelShape& model,
                                            const Cluster& cluster);
// Under a mask (`masked`: causal or a window), `choices` with every candidate whose work
// depends on the layout (layout_matters) at each of planned_layouts() in turn: the layout
// becomes a choice the ranking makes. Without one, `choices` as they are.
std::vector<Candidate> with_layouts(const std::vector<Candidate>& choices, bool masked);

// Why a candidate cannot run a problem ("" when it can): the registry's reason (heads that do
// not split, tensor parallelism outside a layer), or the planner's own (the double ring on one
// node is the ring; usp without a group size > 1 inside a node is the ring).
std::string infeasible_reason(const Candidate& candidate, const ModelShape& model, const Cluster& cluster, Scope scope);
// Ranks per Ulysses group the planner gives usp: the largest divisor of both head counts, of
// the ranks and of the ranks per node (the all-to-all stays inside a node).
int usp_degree(const ModelShape& model, const Cluster& cluster);

struct Prediction {
  Candidate candidate;
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

Prediction predict(const Candidate& candidate, const Cluster& cluster, const ModelShape& model, const Workload& work);

// The fastest candidate that runs and fits; within 0.5% of the fastest, the one that sends
// fewer bytes. Returns the index into `predictions`, or -1 when none runs.
int recommend(const std::vector<Prediction>& predictions);

// Every candidate's prediction at one sequence length, and the recommended one.
struct Row {
  std::int64_t seqlen = 0;
  std::vector<Prediction> predictions;
  int best = -1;  // index into predictions; -1: none runs
};
std::vector<Row> predict_all(const Cluster& cluster, const ModelShape& model, const Workload& work,
                             const std::vector<std::int64_t>& seqlens, const std::vector<Candidate>& candidates);

// Presets (stated assumptions, docs/plan.md). Clusters: "8xA100-PCIe" (the paper's),
// "4x8xA100-RoCE600"; "this" comes from a calibration. Models: "llama2-7b", "llama2-13b".
// Unknown names throw naming `what`.
std::vector<std::string> cluster_preset_names();
Cluster cluster_preset(const std::string& name, const std::string& what);
std::vector<std::string> model_preset_names();
ModelShape model_preset(const std::string& name, const std::string& what);
// The cluster spread as `ranks` ranks over `nodes` nodes (ranks a multiple of nodes, else
// throws naming `what`): a rank with its own slot keeps it; ranks sharing a machine's cores
// share them among the nodes pretended on it.
Cluster resize(Cluster cluster, int nodes, int ranks, const std::string& what);

// ---- calibration: this machine measured -------------------------------------------------

struct Calibration {
  // One core's rate while every core runs the same measurement (one thread each), counted
  // FLOPs as above: attention kernels on kernel_heads x kernel_tokens, d = 128, no mask; fp32
  // sgemm-based projections.
  double attention_forward_f32 = 0, attention_backward_f32 = 0;
  double attention_forward_bf16 = 0, attention_backward_bf16 = 0;
  // The same with a causal mask (FLOPs counted at the visible fraction): masked diagonal
  // tiles run slower than full ones. 0: not measured (older files), use the rates above.
  // cluster_from_calibration turns them into the cost of a partially masked tile.
  double attention_forward_f32_causal = 0, attention_backward_f32_causal = 0;
  double attention_forward_bf16_causal = 0, attention_backward_bf16_causal = 0;
  // The kernels' problem: heads x tokens (older files: 2 x 4096), and the tile the kernels
  // ran it with (0: older files, this machine's default tile).
  std::int64_t kernel_heads = 8, kernel_tokens = 4096;
  int tile_rows = 0, tile_cols = 0;
  double gemm_f32 = 0;
  double memory_bandwidth = 0;  // bytes/s of one core copying 256 MiB (read + write), all copying
  // ring-rsa on one rank (1 head, d = 128, fp32, score rows at least twice the L3 cache:
  // 16384 tokens on a 260 MB L3), FLOPs counted as the
  // kernels' without a mask: its GEMMs and its passes over the score rows together. 0: not
  // measured (older files); the planner then models it from gemm_f32 and memory_bandwidth.
  double ring_rsa_forward_f32 = 0, ring_rsa_backward_f32 = 0;
  // The fp32 kernels (no mask, forward and backward) with two threads on every core at once:
  // their total rate over the all-busy rate above with one thread per core. 0: not measured
  // (older files): taken as 1.
  double shared_core_efficiency = 0;
  // A ring step between two ranks of the communicator a run would use here: threads of this
  // process, or MPI ranks under mpirun.
  std::string link_backend;
  double link_bandwidth = 0;  // bytes/s, 64 MiB messages
  double link_latency = 0;    // seconds, 8-byte messages
  int cores = 1;              // hardware threads
  double memory_bytes = 0;    // available when measured
  std::string measured_at;    // UTC time
};

// The cluster with every compute rate (attention kernels, causal ones included, GEMM,
// ring-rsa) times `speed` (> 0, else throws): cores that run at that fraction of the
// calibrated or preset rate. Links, memory and the masked tiles' extra (in pairs) stay.
Cluster at_speed(Cluster cluster, double speed);

// Measures the kernels, the GEMM and memory copies with `threads` threads at once (one per
// core: the rate of a core while all are busy), printing progress lines to `log`; sets the
// compute figures, cores, memory_bytes and measured_at of the result, not the link.
// `rounds`: the kernels' interleaved rounds (burst plan --calibrate --rounds, default 7).
Calibration measure_compute(std::ostream& log, int threads, int rounds = 7);
// The fp32 forward kernel's rate on the calibration's problem (no mask) now: `threads`
// threads at once call it for about `seconds`, and the mean of their median calls is
// returned (FLOP/s of one core, as Calibration::attention_forward_f32). On a shared machine
// whose speed moves, its ratio to the calibration's rate is the speed to plan with.
double probe_kernel_rate(int threads, double seconds);
// Measures ring steps between the first two ranks of `comm` (8-byte messages for the latency,
// 64 MiB ones for the bandwidth) and sets the link figures of `into` on rank 0. Collective;
// needs at least 2 ranks.
void measure_link(comm::Communicator& comm, Calibration& into);
// Bytes this machine can give a new allocation now (MemAvailable of /proc/meminfo), 0 if
// unknown.
double available_memory();

// The cluster "this": one node of `ranks` ranks sharing the measured cores, as burst run
// places them (threads per rank = cores / ranks, at least one), with the rates of `dtype`
// and the kernels' tile model: a partially masked tile's extra cost is what the causal
// problem took beyond its visible pairs at the full rate, divided among its partially
// masked tiles (0 when the causal rate is not below the full one).
Cluster cluster_from_calibration(const Calibration& calibration, int ranks, DType dtype);

}  // namespace burst::plan
