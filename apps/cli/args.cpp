#include "args.h"
#include "flags.h"

#include <algorithm>
#include <tuple>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string_view>
#include <thread>

#include "burst/burst_attention.h"
#include "burst/documents.h"
#include "burst/strategy.h"
#include "burst/error.h"

namespace burst::cli {
namespace {

// Parses all of `text` as an integer; from_chars rejects "", "+1", "1.5", "12abc" and overflow.
std::int64_t parse_int(std::string_view flag, std::string_view text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size(), flag,
              ": expected an integer, got '", text, "'");
  return value;
}

std::int64_t parse_positive(std::string_view flag, std::string_view text) {
  const std::int64_t value = parse_int(flag, text);
  BURST_CHECK(value >= 1, flag, ": expected a positive integer, got ", value);
  return value;
}

// Positive and small enough for an int (thread and repeat counts).
int parse_count(std::string_view flag, std::string_view text) {
  const std::int64_t value = parse_positive(flag, text);
  BURST_CHECK(value <= 1 << 20, flag, ": expected at most ", 1 << 20, ", got ", value);
  return static_cast<int>(value);
}

// Head counts and head_dim past 2^20 cannot be real problems, and bounding them keeps the
// size products in main far from int64 overflow.
std::int64_t parse_size(std::string_view flag, std::string_view text, std::int64_t max) {
  const std::int64_t value = parse_positive(flag, text);
  BURST_CHECK(value <= max, flag, ": expected at most ", max, ", got ", value);
  return value;
}

float parse_scale(std::string_view flag, std::string_view text) {
  float value = 0.0f;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size() && std::isfinite(value), flag,
              ": expected a finite number, got '", text, "'");
  return value;
}

// "8G", "512M", "1.5T", "4096" (bytes): a size in bytes, with an optional K/M/G/T suffix
// (powers of 1024).
double parse_bytes(std::string_view flag, std::string_view text) {
  double scale = 1;
  std::string_view number = text;
  if (!text.empty()) {
    const char unit = static_cast<char>(std::toupper(static_cast<unsigned char>(text.back())));
    const char* units = "KMGT";
    if (const char* at = std::strchr(units, unit); at != nullptr && unit != '\0') {
      scale = std::pow(1024.0, static_cast<double>(at - units + 1));
      number = text.substr(0, text.size() - 1);
    }
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), value);
  BURST_CHECK(ec == std::errc() && end == number.data() + number.size() && value > 0 && std::isfinite(value), flag,
              ": expected a positive size such as 8G or 512M, got '", text, "'");
  return value * scale;
}

// "LEFT,RIGHT"; a negative side means unbounded and is stored as -1 (MaskSpec's convention).
void parse_window(RunArgs& a, std::string_view flag, std::string_view text) {
  std::tie(a.window_left, a.window_right) = parse_window_sides(flag, text);
}

constexpr std::int64_t kMaxSeqlen = std::int64_t{1} << 32;
constexpr std::int64_t kMaxCount = std::int64_t{1} << 20;

// One row per flag. `value` is the placeholder shown in the help ("" for a switch, which
// takes no value); `apply` stores the parsed value.
void note_size(RunArgs& a, std::string_view flag) { a.size_flags.emplace_back(flag); }

constexpr Flag<RunArgs> kFlags[] = {
    {"--batch", "B", "batch size b (default 1)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.batch = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--seqlen", "S", "query length seqlen_q (default 32768)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.seqlen = parse_size(f, v, kMaxSeqlen);
       note_size(a, f);
     }},
    {"--seqlen-k", "SK", "key/value length seqlen_k (default: seqlen)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.seqlen_k = parse_size(f, v, kMaxSeqlen);
       note_size(a, f);
     }},
    {"--heads", "H", "query heads n_heads_q (default 8)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.heads = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--kv-heads", "G", "key/value heads n_heads_kv, dividing H (default: H)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.kv_heads = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--head-dim", "D", "head dimension d, at most 256 (default 128)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.head_dim = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--q", "Q.npy", "read q from a float32 [b, s, h, d] .npy file (needs --k, --v)",
     [](RunArgs& a, std::string_view, std::string_view v) { a.q_path = v; }},
    {"--k", "K.npy", "read k, [b, seqlen_k, n_heads_kv, d]",
     [](RunArgs& a, std::string_view, std::string_view v) { a.k_path = v; }},
    {"--v", "V.npy", "read v, shaped like k",
     [](RunArgs& a, std::string_view, std::string_view v) { a.v_path = v; }},
    {"--do", "DO.npy", "read dO, shaped like q; computes the backward pass",
     [](RunArgs& a, std::string_view, std::string_view v) { a.do_path = v; }},
    {"--layer", "", "run the attention layer: X [b, s, D] -> Q/K/V projections, RoPE, attention, output projection",
     [](RunArgs& a, std::string_view, std::string_view) { a.layer = true; }},
    {"--block", "", "run transformer blocks: RMSNorm, the attention layer, residual, RMSNorm, SwiGLU MLP, residual "
     "(burst/block.h; every strategy, tp-v1 and tp-v3 included)",
     [](RunArgs& a, std::string_view, std::string_view) { a.block = true; }},
    {"--layers", "L", "--block: blocks in the stack, each with its own weights (default 1)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.layers = static_cast<int>(parse_size(f, v, 4096)); }},
    {"--mlp-dim", "F", "--block: the MLP's hidden width (default round(8 D / 3) rounded up to a multiple of 64)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.mlp_dim = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--model-dim", "D", "--layer, --block: width of X and Y (default heads x head_dim)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.model_dim = parse_size(f, v, kMaxCount);
       note_size(a, f);
     }},
    {"--x", "X.npy", "--layer, --block: read X from a float32 [b, s, D] .npy file",
     [](RunArgs& a, std::string_view, std::string_view v) { a.x_path = v; }},
    {"--weights", "DIR", "--layer: read DIR/wq.npy [D, H d], wk.npy and wv.npy [D, G d], wo.npy [H d, D]; --block: "
     "DIR/layer0, layer1, ... each with those and g1.npy, g2.npy [D], w1.npy, w3.npy [D, F], w2.npy [F, D]",
     [](RunArgs& a, std::string_view, std::string_view v) { a.weights_dir = v; }},
    {"--rope-base", "B", "--layer, --block: rotary embedding base, 0 for none (default 10000)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double base = parse_scale(f, v);
       BURST_CHECK(base == 0.0 || base > 1.0, f, ": expected 0 or a number > 1, got ", v);
       a.rope_base = base;
     }},
    {"--causal", "", "mask keys after the query position (the default)",
     [](RunArgs& a, std::string_view, std::string_view) { a.causal = true; }},
    {"--no-causal", "", "let every query see every key (bidirectional)",
     [](RunArgs& a, std::string_view, std::string_view) { a.causal = false; }},
    {"--window", "LEFT,RIGHT", "see only keys in [query-LEFT, query+RIGHT]; negative = unbounded",
     parse_window},
    {"--doc-lens", "L1,L2,...", "pack documents of these lengths back to back, summing to the sequence length: "
     "a query sees only keys of its own document (on top of the mask)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.doc_lens = algo::parse_document_lengths(v, f); }},
    {"--doc-lens-from", "FILE", "read the document lengths from FILE: one positive integer per line, blank lines "
     "and # comments allowed",
     [](RunArgs& a, std::string_view, std::string_view v) { a.doc_lens_path = v; }},
    {"--doc-dist", "NAME[:L]", "draw document lengths filling the sequence, seeded by --seed: pretrain, pareto, "
     "uniform or fixed (listed below); :L replaces the length parameter L",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.doc_dist = parse_doc_dist(f, v); }},
    {"--scale", "X", "softmax scale (default 1/sqrt(d))",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.scale = parse_scale(f, v); }},
    {"--dtype", "fp32|bf16", "storage of q, k, v, dO and O (default fp32)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.dtype = parse_dtype(v, f); }},
    {"--threads", "T", "threads per rank (default: the hardware threads, shared among in-process ranks)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.threads = parse_count(f, v);
       a.threads_given = true;
     }},
    {"--strategy", "local|burst|ring|allgather|ulysses|ring-rsa|usp|tp-v1|tp-v3",
     "local: one rank; burst: BurstAttention; ring: K/V ring with K/V-passing backward; allgather: "
     "all-gather K/V; ulysses: all-to-all to head shards; ring-rsa: materialised scores, two rings; "
     "usp: Ulysses groups x ring; tp-v1/tp-v3: Megatron tensor parallelism, --layer or --block only (default burst)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.strategy = algo::parse_strategy(std::string(v), std::string(f));
     }},
    {"--ranks", "N", "ranks for --strategy burst: threads of this process, or under mpirun its ranks (must agree)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.ranks = parse_count(f, v); }},
    {"--layout", "contiguous|zigzag|striped|doc-zigzag|balanced",
     "token layout over ranks (default zigzag); doc-zigzag zigzags inside every document, balanced cuts contiguous "
     "shards of equal work (docs/packed-documents.md)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.layout = algo::parse_layout(std::string(v), std::string(f));
     }},
    {"--double-ring", "", "forward over an intra-node ring plus inter-node hops hidden behind it",
     [](RunArgs& a, std::string_view, std::string_view) { a.double_ring = true; }},
    {"--ranks-per-node", "L", "pretend nodes of L consecutive ranks (sets BURST_RANKS_PER_NODE)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.ranks_per_node = parse_count(f, v); }},
    {"--ulysses-degree", "U", "usp: ranks per Ulysses group, dividing the ranks and both head counts (default 1)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.ulysses_degree = parse_count(f, v); }},
    {"--grad-wire", "fp32|bf16", "precision of the gradient partial sums on the wire (default fp32)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.grad_wire = parse_dtype(v, f); }},
    {"--bwd-scheme", "auto|q|kv", "backward: q = BurstAttention's query bundle, kv = K/V passing (default auto: fewer bytes)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.bwd_scheme = algo::parse_scheme(std::string(v), std::string(f));
     }},
    {"--isa", "auto|amxbf16|amxbf16-emulated|avx512bf16|avx512|avx2|generic",
     "tile implementation (default auto; auto never picks the AMX ones)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       a.isa = kernels::parse_isa(std::string(v), std::string(f));
     }},
    {"--block-m", "M", "query rows per tile (default: the kernel's)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.block_m = parse_count(f, v); }},
    {"--block-n", "N", "key rows per tile (default: the kernel's)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.block_n = parse_count(f, v); }},
    {"--seed", "N", "seed of the random inputs (default 0)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const std::int64_t seed = parse_int(f, v);
       BURST_CHECK(seed >= 0, f, ": expected a non-negative integer, got ", seed);
       a.seed = static_cast<std::uint64_t>(seed);
     }},
    {"--backward", "", "also time and check the backward pass, random dO (the default)",
     [](RunArgs& a, std::string_view, std::string_view) { a.backward = true; }},
    {"--forward-only", "", "time and check the forward pass only",
     [](RunArgs& a, std::string_view, std::string_view) { a.backward = false; }},
    {"--repeat", "N", "timed runs; the median is reported (default 1)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.repeat = parse_count(f, v); }},
    {"--save", "DIR", "write o, lse (and dq, dk, dv) as float32 .npy files to DIR",
     [](RunArgs& a, std::string_view, std::string_view v) { a.save_dir = v; }},
    {"--json", "FILE", "write the figures as one JSON object to FILE",
     [](RunArgs& a, std::string_view, std::string_view v) { a.json_path = v; }},
    {"--max-memory", "SIZE", "stop before allocating if the estimate for this machine exceeds SIZE (e.g. 8G, 512M; "
     "default: MemAvailable)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.max_memory = parse_bytes(f, v); }},
    {"--progress", "auto|on|off", "progress bar on stderr (default auto: only when stderr is a terminal)",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.progress = parse_progress(std::string(v), std::string(f)); }},
    {"--timeout", "SECONDS", "deadline of every wait between ranks (default: BURST_TIMEOUT, else 60)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double t = parse_scale(f, v);
       BURST_CHECK(t >= 1e-3 && t <= 1e9, f, ": expected a number of seconds from 0.001 to 1e9, got ", v);
       a.timeout_seconds = t;
     }},
    {"--link-gbps", "G", "emulate links between nodes of G Gbit/s (one node: every link); sends are held back "
     "until the modelled link has carried them (default: BURST_LINK_GBPS, else the real link)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double g = parse_scale(f, v);
       BURST_CHECK(g > 0, f, ": expected a positive rate in Gbit/s, got ", v);
       a.link_gbps = g;
     }},
    {"--link-latency-us", "US", "emulated latency of those links in microseconds (default: BURST_LINK_LATENCY_US, else 0)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double us = parse_scale(f, v);
       BURST_CHECK(us >= 0, f, ": expected a non-negative number of microseconds, got ", v);
       a.link_latency_us = us;
     }},
    {"--intra-gbps", "G", "emulate links between ranks of one node of G Gbit/s (default: BURST_INTRA_GBPS, else "
     "the real link)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double g = parse_scale(f, v);
       BURST_CHECK(g > 0, f, ": expected a positive rate in Gbit/s, got ", v);
       a.intra_gbps = g;
     }},
    {"--intra-latency-us", "US", "emulated latency of those links in microseconds (default: BURST_INTRA_LATENCY_US, "
     "else 0)",
     [](RunArgs& a, std::string_view f, std::string_view v) {
       const double us = parse_scale(f, v);
       BURST_CHECK(us >= 0, f, ": expected a non-negative number of microseconds, got ", v);
       a.intra_latency_us = us;
     }},
    {"--nics-per-node", "K", "in-process ranks: each node of --ranks-per-node ranks has K NICs of --link-gbps each "
     "way, shared by its ranks (rank i of a node uses NIC i % K); default: a link of its own per rank",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.nics_per_node = parse_count(f, v); }},
    {"--emulate-compute", "F[,B]", "emulate the attention kernels: each call waits for its tiles' FLOPs at F GFLOP/s "
     "forward and B backward (default B = F) per rank instead of computing (docs/emulation.md); bytes, buffers, "
     "schedule and links stay real, results are not attention",
     [](RunArgs& a, std::string_view f, std::string_view v) { a.emulate = parse_emulation(f, v); }},
    {"--help", "", "print this help",
     [](RunArgs& a, std::string_view, std::string_view) { a.help = true; }},
};

// Flags that would be silently ignored are refused: a user who passes one expects it to act.
void check_conflicts(const RunArgs& a) {
  auto refuse_with = [&](std::string_view flag, std::string_view other, std::string_view why) {
    BURST_CHECK(!a.was_given(flag) || !a.was_given(other), flag, " cannot be combined with ", other, ": ", why);
  };
  refuse_with("--forward-only", "--backward", "one asks for the forward pass alone, the other for both");
  refuse_with("--forward-only", "--do", "dO is the backward pass's input");
  refuse_with("--forward-only", "--bwd-scheme", "the backward scheme needs the backward pass");
  refuse_with("--forward-only", "--grad-wire", "gradients travel only in the backward pass");
  refuse_with("--causal", "--no-causal", "they ask for opposite masks");
  refuse_with("--layer", "--block", "a block holds its attention layer; give one of them");
  for (std::string_view flag : {"--layer", "--block"})
    refuse_with("--emulate-compute", flag, "emulation replaces the attention core's kernels only, and its results are not attention");
  BURST_CHECK(!a.emulate || a.strategy != algo::Strategy::kLocal,
              "--emulate-compute: emulates the ranks of a distributed strategy; give --strategy (not local)");
  BURST_CHECK(!a.emulate || a.strategy != algo::Strategy::kRingRsa,
              "--emulate-compute: ring-rsa computes its scores with plain GEMMs, not the attention kernels that "
              "emulation replaces");
  BURST_CHECK(a.nics_per_node == 0 || (a.ranks_per_node > 0 && a.link_gbps > 0),
              "--nics-per-node: NICs of nodes of --ranks-per-node ranks at --link-gbps; give both");
  for (std::string_view flag : {"--layers", "--mlp-dim"})
    BURST_CHECK(!a.was_given(flag) || a.block, flag, ": describes the transformer block: add --block");
  for (auto [x, y] : {std::pair{"--doc-lens", "--doc-lens-from"}, {"--doc-lens", "--doc-dist"}, {"--doc-lens-from", "--doc-dist"}})
    refuse_with(x, y, "both give the document lengths");
  // Which strategies read a flag; a flag given with any other strategy is refused.
  struct Applies {
    std::string_view flag;
    std::initializer_list<std::string_view> strategies;
  };
  const Applies table[] = {
      {"--ulysses-degree", {"usp"}},
      {"--bwd-scheme", {"burst", "usp"}},
      {"--grad-wire", {"burst", "ring", "usp"}},
      {"--double-ring", {"burst", "ring", "usp"}},
  };
  for (const Applies& t : table) {
    const std::string name = algo::strategy_name(a.strategy);
    const bool applies = std::find(t.strategies.begin(), t.strategies.end(), name) != t.strategies.end();
    if (!a.was_given(t.flag) || applies) continue;
    std::string names;
    for (std::string_view s : t.strategies) names += (names.empty() ? "" : ", ") + std::string(s);
    fail(t.flag, ": applies to --strategy ", names, " only, got --strategy ", name);
  }
  if (a.strategy == algo::Strategy::kLocal) {
    for (std::string_view flag : {"--layout", "--ranks-per-node", "--link-gbps", "--link-latency-us"}) {
      BURST_CHECK(!a.was_given(flag), flag, ": does not apply to --strategy local, which runs on one rank");
    }
  }
}

}  // namespace

bool RunArgs::was_given(std::string_view flag) const {
  return std::find(given.begin(), given.end(), flag) != given.end();
}

RunArgs parse_run_args(std::span<char* const> args) {
  RunArgs a;
  a.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  a.given = parse_flags<RunArgs>("run", kFlags, args, a);
  check_conflicts(a);
  return a;
}

std::int64_t block_mlp_dim(std::int64_t model_dim) {
  const auto rounded = static_cast<std::int64_t>(std::llround(8.0 * static_cast<double>(model_dim) / 3.0));
  return (rounded + 63) / 64 * 64;
}

std::string top_usage() {
  return "usage: burst run [flags]     time and verify exact attention (see burst run --help)\n"
         "       burst bench [flags]   sweep strategies x lengths x ranks; JSON, CSV and SVG charts\n"
         "       burst plan [flags]    predict time, traffic and memory of each strategy on a cluster\n"
         "       burst decode [flags]  prefill a long context, then decode token by token over the ranks\n"
         "       burst --help | --version\n";
}

std::string run_usage() {
  std::ostringstream os;
  os << "positions: keys sit at 0..seqlen_k-1 and query i at seqlen_k-seqlen_q+i (bottom-right\n"
        "  alignment), so --causal lets query i see keys up to its own position.\n"
        "timing: median wall time of --repeat runs, inputs and the check excluded.\n"
        "  forward FLOPs = 4 b h seqlen_q seqlen_k d x (visible fraction of the mask);\n"
        "  backward FLOPs = 2.5 x forward.\n"
        "verification: against a double reference computed from the same (possibly\n"
        "  bf16-rounded) inputs. Relative error of a tensor x (o, dq, dk, dv):\n"
        "    max |x - ref| / max(max |ref|, floor)   floor: 0 for o and dv; for dq (dk)\n"
        "    2^-12 d scale max|dO| max|V| max|K| (max|Q|), so exact zero gradients pass;\n"
        "  NaN and Inf are compared by position (docs/numerics.md) and any other\n"
        "  non-finite value is an infinite error; of lse: max |lse - ref| / (1 + |ref|);\n"
        "  max_error is the largest over o and the gradients. Every query row is checked\n"
        "  when b h seqlen_q seqlen_k d <= 2^29,\n"
        "  else 64 rows spread over the sequence (first and last included); gradients are\n"
        "  checked when b h seqlen_q seqlen_k d <= 2^31. Tolerance: 1e-4 (fp32), 1e-2 (bf16).\n"
        "exit status (the same in-process and under mpirun):\n"
        "  0 checked and within tolerance   1 an error over tolerance\n"
        "  2 bad arguments or input files, found before any compute\n"
        "  3 communication failure: a deadline, a lost peer, ranks that disagree\n"
        "  4 anything else (such as an output file that could not be written)\n";
  os << documents_usage();
  return flag_usage<RunArgs>("run",
                             "Times exact attention on this machine and checks it against a double-precision "
                             "reference. Inputs are random (seeded normal values) unless --q/--k/--v are given.",
                             kFlags, os.str());
}

}  // namespace burst::cli
