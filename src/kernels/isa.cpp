#include <cstdlib>

#include "core/cpu.h"
#include "burst/error.h"
#include "kernels/tile_ops.h"

namespace burst::kernels {
namespace {

bool supported(Isa isa) {
  const CpuFeatures& cpu = cpu_features();
  switch (isa) {
    case Isa::kAvx512Bf16: return cpu.has_avx512_kernels() && cpu.avx512bf16;
    case Isa::kAvx512: return cpu.has_avx512_kernels();
    case Isa::kAvx2: return cpu.has_avx2_kernels();
    case Isa::kGeneric: return true;
    case Isa::kAuto: return true;
  }
  return false;
}

}  // namespace

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: return "generic";
  }
  return "?";
}

Isa parse_isa(const std::string& text, const std::string& what) {
  for (Isa isa : {Isa::kAuto, Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (text == isa_name(isa)) return isa;
  }
  fail(what, ": expected auto, avx512bf16, avx512, avx2 or generic, got '", text, "'");
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::kAvx512Bf16, Isa::kAvx512, Isa::kAvx2, Isa::kGeneric}) {
    if (supported(isa)) out.push_back(isa);
  }
  return out;
}

Isa resolve_isa(Isa requested) {
  if (requested == Isa::kAuto) {
    if (const char* env = std::getenv("BURST_ISA"); env != nullptr && *env != '\0') {
      requested = parse_isa(env, "BURST_ISA");
    }
  }
  if (requested == Isa::kAuto) return supported_isas().front();
  BURST_CHECK(supported(requested), "isa: this processor (", cpu_features().describe(),
              ") cannot run the ", isa_name(requested), " kernels");
  return requested;
}

const TileOps& tile_ops(Isa isa) {
  switch (resolve_isa(isa)) {
    case Isa::kAvx512Bf16: return avx512bf16::table();
    case Isa::kAvx512: return avx512::table();
    case Isa::kAvx2: return avx2::table();
    default: return generic::table();
  }
}

}  // namespace burst::kernels
