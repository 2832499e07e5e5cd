// What every rank of a `burst run` must agree on (run_settings) and the emulated links of the
// run (link_model_of); split from args.cpp, which holds the flag table.
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "args.h"
#include "burst/error.h"
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


}  // namespace burst::cli
