// What every rank of a `burst run` must agree on (run_settings), the emulated links of the
// run (link_model_of) and the setup --layer and --block share (layer_setup); split from
// args.cpp, which holds the flag table.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <thread>

#include "args.h"
#include "distributed.h"
#include "layer_run.h"
#include "problem.h"
#include "burst/error.h"
#include "burst/world.h"
#include "kernels/blas.h"
#include "burst/strategy.h"

namespace burst::cli {
namespace {

std::string emulation_setting(const RunArgs& a) {
  if (!a.emulate) return "off";
  std::ostringstream os;
  os.precision(9);
  os << a.emulate->forward_flops / 1e9 << "," << a.emulate->backward_flops / 1e9 << " GFLOP/s";
  return os.str();
}

}  // namespace

std::vector<comm::Setting> run_settings(const RunArgs& a, std::uint64_t inputs_hash) {
  auto number = [](double x) {
    std::ostringstream os;
    os.precision(9);
    os << x;
    return os.str();
  };
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx", static_cast<unsigned long long>(inputs_hash));
  return {
      {"strategy", algo::strategy_name(a.strategy)},
      {"layer", a.layer ? "on (--layer)" : "off"},
      {"block", a.block ? "on (--block), " + std::to_string(a.layers) + " layers, mlp dim " +
                              (a.mlp_dim ? std::to_string(*a.mlp_dim) : std::string("default"))
                        : std::string("off")},
      {"layout", algo::layout_name(a.layout)},
      {"passes", a.backward ? "forward and backward" : "forward only (--forward-only)"},
      {"backward scheme", algo::scheme_name(a.bwd_scheme)},
      {"documents", documents_setting(a)},
      {"dtype", std::string(dtype_name(a.dtype))},
      {"inputs", a.from_files() || !a.x_path.empty() || !a.weights_dir.empty() ? "from files" : "random"},
      {"seed", std::to_string(a.seed)},
      {"hash of the global inputs", hash},
      {"repeat", std::to_string(a.repeat)},
      {"double ring", a.double_ring ? "on" : "off"},
      {"ranks per node", a.ranks_per_node > 0 ? std::to_string(a.ranks_per_node) : "from the communicator"},
      {"ulysses degree", std::to_string(a.ulysses_degree)},
      {"gradient wire", std::string(dtype_name(a.grad_wire))},
      {"isa", std::string(kernels::isa_name(a.isa))},
      {"block_m", std::to_string(a.block_m)},
      {"block_n", std::to_string(a.block_n)},
      {"timeout seconds", a.timeout_seconds > 0 ? number(a.timeout_seconds) : "default"},
      {"link Gbit/s", a.link_gbps > 0 ? number(a.link_gbps) : "default"},
      {"link latency us", a.link_latency_us > 0 ? number(a.link_latency_us) : "default"},
      {"intra-node Gbit/s", a.intra_gbps > 0 ? number(a.intra_gbps) : "default"},
      {"intra-node latency us", a.intra_latency_us > 0 ? number(a.intra_latency_us) : "default"},
      {"NICs per node", a.nics_per_node > 0 ? std::to_string(a.nics_per_node) : "a link per rank"},
      {"emulated compute", emulation_setting(a)},
  };
}

comm::LinkModel link_model_of(const RunArgs& args) {
  comm::LinkModel m = comm::link_model_from_environment();
  if (args.link_gbps > 0) m.inter_node_bytes_per_second = args.link_gbps * 1e9 / 8;
  if (args.link_latency_us > 0) m.inter_node_latency = std::chrono::microseconds(static_cast<std::int64_t>(args.link_latency_us));
  if (args.intra_gbps > 0) m.intra_node_bytes_per_second = args.intra_gbps * 1e9 / 8;
  if (args.intra_latency_us > 0) m.intra_node_latency = std::chrono::microseconds(static_cast<std::int64_t>(args.intra_latency_us));
  return m;
}

kernels::EmulatedCompute parse_emulation(std::string_view flag, std::string_view text) {
  auto rate = [&](std::string_view part) {
    double value = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    BURST_CHECK(ec == std::errc() && end == part.data() + part.size() && std::isfinite(value) && value > 0, flag,
                ": expected F or F,B, positive GFLOP/s per rank (forward, backward), got '", text, "'");
    return value * 1e9;
  };
  const std::size_t comma = text.find(',');
  kernels::EmulatedCompute e;
  e.forward_flops = rate(text.substr(0, comma));
  e.backward_flops = comma == std::string_view::npos ? e.forward_flops : rate(text.substr(comma + 1));
  return e;
}


LayerSetup layer_setup(const RunArgs& args, std::int64_t seqlen) {
  LayerSetup s;
  const bool single = args.strategy == algo::Strategy::kLocal;
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  s.mpi = comm::launched_by_mpi();
  BURST_CHECK(!single || args.ranks <= 1, "--ranks: strategy local runs on one rank, got ", args.ranks);
  s.ranks = single ? 1 : args.ranks > 0 ? args.ranks : (s.mpi ? 0 : hardware);
  BURST_CHECK(s.ranks == 0 || seqlen >= s.ranks, "--seqlen: needs at least one token per rank (", s.ranks, "), got ",
              seqlen);
  s.options.strategy = args.strategy;
  s.options.dtype = args.dtype;
  s.options.rope_base = args.rope_base;
  // Packed documents: attention stays inside each, and RoPE positions restart at each.
  s.documents = documents_of(args, seqlen, args.x_path.empty() ? "--seqlen" : "the --x file");
  kernels::AttentionOptions kernel;
  kernel.mask = mask_of(args, s.documents);
  kernel.isa = args.isa;
  kernel.block_m = args.block_m;
  kernel.block_n = args.block_n;
  s.options.attention = strategy_options(args, seqlen, kernel);
  (void)kernels::blas_info();  // loads BLAS before any timing
  return s;
}

}  // namespace burst::cli
