// Command-line arguments of `burst run`: one table of flags, each with its value syntax, help
// text and the field it sets, so usage text and parsing cannot drift apart.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "burst/strategy.h"
#include "burst/throttle.h"
#include "burst/dtype.h"
#include "progress.h"
#include "burst/kernels.h"

namespace burst::cli {

// Everything `burst run` was asked to do. Sizes left unset take their defaults in main
// (kv_heads = heads, seqlen_k = seqlen) or come from the .npy files. The defaults are the
// main job: BurstAttention forward + backward, causal, zigzag, s = 32768, 8 heads, d = 128,
// over one in-process rank per hardware thread.
struct RunArgs {
  std::int64_t batch = 1;
  std::int64_t seqlen = 32768;
  std::optional<std::int64_t> seqlen_k;
  std::int64_t heads = 8;
  std::optional<std::int64_t> kv_heads;
  std::int64_t head_dim = 128;
  bool causal = true;
  std::int64_t window_left = -1;  // -1: unbounded (any negative input is stored as -1)
  std::int64_t window_right = -1;
  // Packed documents (at most one source): lengths given (--doc-lens), read from a file
  // (--doc-lens-from) or drawn from a named distribution with --seed (--doc-dist NAME[:L]);
  // none: one document. problem.h's documents_of turns them into boundaries.
  std::vector<std::int64_t> doc_lens;
  std::string doc_lens_path;
  std::string doc_dist;
  std::optional<float> scale;
  DType dtype = DType::kF32;
  int threads = 1;  // set to the hardware concurrency before parsing
  std::uint64_t seed = 0;
  bool backward = true;
  int repeat = 1;
  kernels::Isa isa = kernels::Isa::kAuto;
  algo::Strategy strategy = algo::Strategy::kBurst;  // local: one rank; the others over ranks
  int ranks = 0;                   // 0: under mpirun its ranks, else the hardware threads
  algo::Layout layout = algo::Layout::kZigzag;
  algo::BackwardScheme bwd_scheme = algo::BackwardScheme::kAuto;
  bool threads_given = false;      // --threads given: threads per rank
  bool double_ring = false;        // forward over the topology-aware double ring
  int ranks_per_node = 0;          // 0: nodes as the communicator sees them
  DType grad_wire = DType::kF32;   // wire precision of the trailing gradient partial sums
  int ulysses_degree = 1;          // usp: ranks per Ulysses group
  int block_m = 0;  // 0: the kernel's default tile
  int block_n = 0;
  // --layer: the whole attention layer (projections, RoPE, attention, output projection).
  bool layer = false;
  // --block: transformer blocks (burst/block.h), `layers` of them, MLP width mlp_dim (default
  // block_mlp_dim of D).
  bool block = false;
  int layers = 1;
  std::optional<std::int64_t> mlp_dim;
  std::optional<std::int64_t> model_dim;  // D of X and Y (default heads * head_dim)
  double rope_base = 10000.0;             // 0: no rotary embedding
  std::string x_path, weights_dir;
  std::string q_path, k_path, v_path, do_path;
  std::string save_dir;
  std::string json_path;
  double max_memory = 0;  // bytes this machine may use; 0: what /proc/meminfo says is available
  ProgressMode progress = ProgressMode::kAuto;
  double timeout_seconds = 0;  // 0: BURST_TIMEOUT or its default
  double link_gbps = 0;        // emulated inter-node link rate; 0: BURST_LINK_GBPS or none
  double link_latency_us = 0;  // emulated inter-node latency; 0: BURST_LINK_LATENCY_US or none
  double intra_gbps = 0;       // emulated intra-node link rate; 0: BURST_INTRA_GBPS or none
  double intra_latency_us = 0; // emulated intra-node latency; 0: BURST_INTRA_LATENCY_US or none
  int nics_per_node = 0;       // > 0: in-process nodes share that many NICs (comm::make_fabric)
  // --emulate-compute: the attention kernels wait for this model's time instead of computing
  // (kernels::EmulatedCompute); results are then not attention and are not verified.
  std::optional<kernels::EmulatedCompute> emulate;
  bool help = false;
  // Size flags given explicitly, so that combining them with --q can be refused by name.
  std::vector<std::string> size_flags;
  // Every flag given, so that flags which do not apply to the run can be refused by name.
  std::vector<std::string> given;

  bool was_given(std::string_view flag) const;

  bool has_window() const { return window_left >= 0 || window_right >= 0; }
  bool has_documents() const { return !doc_lens.empty() || !doc_lens_path.empty() || !doc_dist.empty(); }
  bool from_files() const { return !q_path.empty(); }
  // --layer or --block: X and weights instead of Q, K, V.
  bool whole_layer() const { return layer || block; }
};

// The MLP width a block of width `model_dim` gets without --mlp-dim: LLaMA's SwiGLU
// convention, round(8 D / 3) rounded up to a multiple of 64 (D = 1024: 2752, D = 4096: 11008).
std::int64_t block_mlp_dim(std::int64_t model_dim);

// Parses the arguments after `run`. Throws burst::Error "FLAG: expected X, got Y" on any
// malformed or unknown argument, and on flags that contradict each other or do not apply to
// the chosen strategy or passes; cross-flag checks that need file shapes happen in main.
RunArgs parse_run_args(std::span<char* const> args);

// What every rank of a distributed run must have alike besides the problem's shapes (which
// the strategies check): strategy, layout, passes, seed, a hash of the global inputs
// (`inputs_hash`), timing and link settings. Each as people read it, for
// comm::check_agreement.
std::vector<comm::Setting> run_settings(const RunArgs& args, std::uint64_t inputs_hash);

// The emulated links of this run (burst/throttle.h): --link-gbps, --link-latency-us,
// --intra-gbps and --intra-latency-us, else the BURST_LINK_* and BURST_INTRA_* environment.
comm::LinkModel link_model_of(const RunArgs& args);

// --emulate-compute's value "F" or "F,B" (GFLOP/s per rank, forward and backward); throws
// naming `flag`.
kernels::EmulatedCompute parse_emulation(std::string_view flag, std::string_view text);

// Checks a distribution of burst/documents.h, "NAME" or "NAME:L", and returns it; throws
// naming `flag`, listing the names and suggesting the closest, otherwise.
std::string parse_doc_dist(std::string_view flag, std::string_view text);
// Where a run's documents come from, as people read it (ranks compare it; the strategies
// compare the boundaries themselves): "none", "--doc-lens (3 lengths)", "--doc-dist pretrain".
std::string documents_setting(const RunArgs& args);
// The distributions' part of `burst run --help`.
std::string documents_usage();

// Usage text of `burst` and of `burst run` (the latter generated from the flag table).
std::string top_usage();
std::string run_usage();

}  // namespace burst::cli
