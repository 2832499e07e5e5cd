#include "plan_calibration.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "burst/error.h"
#include "json.h"
#include "output.h"
#include "plan_report.h"

namespace burst::cli {
namespace {

// The value after "key": in a flat JSON object (numbers and strings only).
std::string raw_value(const std::string& text, const std::string& key, const std::string& what) {
  const std::string quoted = "\"" + key + "\"";
  const auto at = text.find(quoted);
  BURST_CHECK(at != std::string::npos, what, ": calibration has no \"", key, "\"");
  auto pos = text.find(':', at + quoted.size());
  BURST_CHECK(pos != std::string::npos, what, ": calibration \"", key, "\" has no value");
  ++pos;
  while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\n')) ++pos;
  if (pos < text.size() && text[pos] == '"') {
    const auto end = text.find('"', pos + 1);
    BURST_CHECK(end != std::string::npos, what, ": calibration \"", key, "\" is an unterminated string");
    return text.substr(pos + 1, end - pos - 1);
  }
  auto end = pos;
  while (end < text.size() && text[end] != ',' && text[end] != '\n' && text[end] != '}') ++end;
  return text.substr(pos, end - pos);
}

double number_value(const std::string& text, const std::string& key, const std::string& what) {
  const std::string raw = raw_value(text, key, what);
  char* end = nullptr;
  const double x = std::strtod(raw.c_str(), &end);
  BURST_CHECK(end != raw.c_str() && *end == '\0' && x > 0, what, ": calibration \"", key,
              "\": expected a positive number, got '", raw, "'");
  return x;
}

}  // namespace

std::string calibration_json(const plan::Calibration& c) {
  JsonObject j;
  j.string("measured_at", c.measured_at);
  j.integer("cores", c.cores);
  j.number("memory_bytes", c.memory_bytes);
  j.number("attention_forward_flops_fp32", c.attention_forward_f32);
  j.number("attention_backward_flops_fp32", c.attention_backward_f32);
  j.number("attention_forward_flops_bf16", c.attention_forward_bf16);
  j.number("attention_backward_flops_bf16", c.attention_backward_bf16);
  j.number("attention_forward_flops_fp32_causal", c.attention_forward_f32_causal);
  j.number("attention_backward_flops_fp32_causal", c.attention_backward_f32_causal);
  j.number("attention_forward_flops_bf16_causal", c.attention_forward_bf16_causal);
  j.number("attention_backward_flops_bf16_causal", c.attention_backward_bf16_causal);
  j.integer("kernel_heads", c.kernel_heads);
  j.integer("kernel_tokens", c.kernel_tokens);
  j.integer("tile_rows", c.tile_rows);
  j.integer("tile_cols", c.tile_cols);
  j.number("gemm_flops_fp32", c.gemm_f32);
  j.number("memory_bandwidth", c.memory_bandwidth);
  j.number("ring_rsa_forward_flops_fp32", c.ring_rsa_forward_f32);
  j.number("ring_rsa_backward_flops_fp32", c.ring_rsa_backward_f32);
  j.number("shared_core_efficiency", c.shared_core_efficiency);
  j.string("link_backend", c.link_backend);
  j.number("link_bandwidth", c.link_bandwidth);
  j.number("link_latency", c.link_latency);
  return j.text();
}

void print_calibration(std::ostream& os, const plan::Calibration& c) {
  const plan::Cluster tiles = plan::cluster_from_calibration(c, 1, DType::kF32);
  os << "calibration (" << c.cores << " cores, one thread each; kernels on " << c.kernel_heads << " heads x "
     << c.kernel_tokens << " tokens):\n"
     << "  attention fp32 forward " << fmt("%.1f", c.attention_forward_f32 * 1e-9) << " GFLOP/s, backward "
     << fmt("%.1f", c.attention_backward_f32 * 1e-9) << "\n"
     << "  attention bf16 forward " << fmt("%.1f", c.attention_forward_bf16 * 1e-9) << " GFLOP/s, backward "
     << fmt("%.1f", c.attention_backward_bf16 * 1e-9) << "\n"
     << "  causal fp32 / bf16     forward " << fmt("%.1f", c.attention_forward_f32_causal * 1e-9) << " / "
     << fmt("%.1f", c.attention_forward_bf16_causal * 1e-9) << " GFLOP/s, backward "
     << fmt("%.1f", c.attention_backward_f32_causal * 1e-9) << " / "
     << fmt("%.1f", c.attention_backward_bf16_causal * 1e-9) << "\n";
  if (tiles.tile_rows > 0) {
    const double area = static_cast<double>(tiles.tile_rows) * tiles.tile_cols;
    os << "  fp32 masked tile       " << tiles.tile_rows << " x " << tiles.tile_cols << ": forward "
       << fmt("%.2f", tiles.masked_tile_forward / area) << ", backward " << fmt("%.2f", tiles.masked_tile_backward / area)
       << " tiles of work beyond its visible pairs\n";
  }
  os << "  projection GEMM fp32   " << fmt("%.1f", c.gemm_f32 * 1e-9) << " GFLOP/s\n"
     << "  memory copy            " << fmt("%.2f", c.memory_bandwidth * 1e-9) << " GB/s\n"
     << "  ring-rsa fp32          forward " << fmt("%.1f", c.ring_rsa_forward_f32 * 1e-9) << " GFLOP/s, backward "
     << fmt("%.1f", c.ring_rsa_backward_f32 * 1e-9) << "\n"
     << "  two threads per core   " << fmt("%.2f", c.shared_core_efficiency)
     << " of one thread's rate (ranks beyond the cores)\n"
     << "  link (" << c.link_backend << ")           " << fmt("%.2f", c.link_bandwidth * 1e-9) << " GB/s, "
     << fmt("%.1f", c.link_latency * 1e6) << " us per message\n"
     << "  memory available       " << fmt("%.1f", c.memory_bytes * 1e-9) << " GB\n";
}

void save_calibration(const std::string& path, const plan::Calibration& c) {
  Outputs outputs;
  outputs.expect_file("--calibration", path);
  outputs.write_text(path, calibration_json(c));
  outputs.commit();
}

plan::Calibration load_calibration(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  BURST_CHECK(in.good(), what, ": no calibration file '", path, "' (run burst plan --calibrate first)");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  plan::Calibration c;
  c.measured_at = raw_value(text, "measured_at", what);
  c.cores = static_cast<int>(number_value(text, "cores", what));
  c.memory_bytes = number_value(text, "memory_bytes", what);
  c.attention_forward_f32 = number_value(text, "attention_forward_flops_fp32", what);
  c.attention_backward_f32 = number_value(text, "attention_backward_flops_fp32", what);
  c.attention_forward_bf16 = number_value(text, "attention_forward_flops_bf16", what);
  c.attention_backward_bf16 = number_value(text, "attention_backward_flops_bf16", what);
  auto optional = [&](const char* key) {
    std::string quoted(1, '"');
    quoted += key;
    quoted += '"';
    if (text.find(quoted) == std::string::npos) return 0.0;
    const std::string raw = raw_value(text, key, what);
    char* end = nullptr;
    const double x = std::strtod(raw.c_str(), &end);
    BURST_CHECK(end != raw.c_str() && *end == '\0' && x >= 0, what, ": calibration \"", key,
                "\": expected a number >= 0, got '", raw, "'");
    return x;
  };
  c.attention_forward_f32_causal = optional("attention_forward_flops_fp32_causal");
  c.attention_backward_f32_causal = optional("attention_backward_flops_fp32_causal");
  c.attention_forward_bf16_causal = optional("attention_forward_flops_bf16_causal");
  c.attention_backward_bf16_causal = optional("attention_backward_flops_bf16_causal");
  // Files from before these keys measured 2 heads x 4096 tokens on this machine's tile.
  auto count = [&](const char* key, double absent) {
    const double x = optional(key);
    BURST_CHECK(x == static_cast<double>(static_cast<std::int64_t>(x)), what, ": calibration \"", key,
                "\": expected a whole number, got ", x);
    return x > 0 ? static_cast<std::int64_t>(x) : static_cast<std::int64_t>(absent);
  };
  c.kernel_heads = count("kernel_heads", 2);
  c.kernel_tokens = count("kernel_tokens", 4096);
  c.tile_rows = static_cast<int>(count("tile_rows", 0));
  c.tile_cols = static_cast<int>(count("tile_cols", 0));
  c.gemm_f32 = number_value(text, "gemm_flops_fp32", what);
  c.memory_bandwidth = number_value(text, "memory_bandwidth", what);
  c.ring_rsa_forward_f32 = optional("ring_rsa_forward_flops_fp32");
  c.ring_rsa_backward_f32 = optional("ring_rsa_backward_flops_fp32");
  c.shared_core_efficiency = optional("shared_core_efficiency");
  c.link_backend = raw_value(text, "link_backend", what);
  c.link_bandwidth = number_value(text, "link_bandwidth", what);
  c.link_latency = number_value(text, "link_latency", what);
  return c;
}

}  // namespace burst::cli
