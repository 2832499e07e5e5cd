#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <iterator>

#include "core/cpu.h"
#include "burst/error.h"
#include "kernels/tile_ops.h"

namespace burst::kernels {
namespace {

// Every implementation, best first.
constexpr Isa kImplementations[] = {Isa::kAmxBf16, Isa::kAmxBf16Emulated, Isa::kAvx512Bf16,
                                    Isa::kAvx512,  Isa::kAvx2,            Isa::kGeneric};

bool supported(Isa isa) {
  const CpuFeatures& cpu = cpu_features();
  switch (isa) {
    case Isa::kAmxBf16: return supported(Isa::kAvx512Bf16) && amx_bf16_status().permitted;
    case Isa::kAmxBf16Emulated:
    case Isa::kAvx512Bf16: return cpu.has_avx512_kernels() && cpu.avx512bf16;
    case Isa::kAvx512: return cpu.has_avx512_kernels();
    case Isa::kAvx2: return cpu.has_avx2_kernels();
    case Isa::kGeneric: return true;
    case Isa::kAuto: return true;
  }
  return false;
}

std::uint64_t read_xcr0() {
  std::uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<std::uint64_t>(hi) << 32) | lo;
}

AmxStatus detect_amx() {
  AmxStatus s;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || ((d >> 22) & 1u) == 0 || ((d >> 24) & 1u) == 0) {
    s.why = "the processor reports no amx_bf16 and amx_tile (cpuid 7.0 EDX bits 22, 24)";
    return s;
  }
  s.cpu = true;
  if (!__get_cpuid(1, &a, &b, &c, &d) || ((c >> 27) & 1u) == 0 || (read_xcr0() & 0x60000u) != 0x60000u) {
    s.why = "the OS has not enabled the AMX tile state (XCR0 bits 17, 18)";
    return s;
  }
  s.os = true;
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    s.why = "Linux refused ARCH_REQ_XCOMP_PERM for the tile data state";
    return s;
  }
  unsigned long granted = 0;
  s.permitted = syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) == 0 && ((granted >> kXfeatureXtiledata) & 1u);
  s.why = s.permitted ? "usable" : "ARCH_GET_XCOMP_PERM does not list the tile data state";
  return s;
}

}  // namespace

const AmxStatus& amx_bf16_status() {
  static const AmxStatus status = detect_amx();
  return status;
}

std::string isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kAmxBf16: return "amxbf16";
    case Isa::kAmxBf16Emulated: return "amxbf16-emulated";
    case Isa::kAvx512Bf16: return "avx512bf16";
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: return "generic";
  }
  return "?";
}

Isa parse_isa(const std::string& text, const std::string& what) {
  if (text == isa_name(Isa::kAuto)) return Isa::kAuto;
  std::string names = isa_name(Isa::kAuto);
  for (Isa isa : kImplementations) {
    if (text == isa_name(isa)) return isa;
    names.append(isa == kImplementations[std::size(kImplementations) - 1] ? " or " : ", ").append(isa_name(isa));
  }
  fail(what, ": expected ", names, ", got '", text, "'");
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> out;
  for (Isa isa : kImplementations) {
    if (supported(isa)) out.push_back(isa);
  }
  return out;
}

bool chosen_by_auto(Isa isa) { return isa != Isa::kAuto && isa != Isa::kAmxBf16 && isa != Isa::kAmxBf16Emulated; }

Isa resolve_isa(Isa requested) {
  if (requested == Isa::kAuto) {
    if (const char* env = std::getenv("BURST_ISA"); env != nullptr && *env != '\0') {
      requested = parse_isa(env, "BURST_ISA");
    }
  }
  if (requested == Isa::kAuto) {
    // Auto skips the AMX implementations without asking Linux for the tile state.
    for (Isa isa : kImplementations) {
      if (chosen_by_auto(isa) && supported(isa)) return isa;
    }
  }
  if (requested == Isa::kAmxBf16 && supported(Isa::kAvx512Bf16)) {
    BURST_CHECK(supported(requested), "isa: this process cannot run the amxbf16 kernels: ", amx_bf16_status().why);
  }
  BURST_CHECK(supported(requested), "isa: this processor (", cpu_features().describe(),
              ") cannot run the ", isa_name(requested), " kernels");
  return requested;
}

TileOps with_amx(const TileOps& base, Isa isa, const amx::Ops& amx) {
  TileOps t = base;
  t.isa = isa;
  t.fused_bf16 = false;  // bf16 takes the AMX route (detail::route_of)
  t.amx = &amx;
  return t;
}

const TileOps& tile_ops(Isa isa) {
  switch (resolve_isa(isa)) {
    case Isa::kAmxBf16: return amxbf16::table();
    case Isa::kAmxBf16Emulated: return amxbf16_emulated::table();
    case Isa::kAvx512Bf16: return avx512bf16::table();
    case Isa::kAvx512: return avx512::table();
    case Isa::kAvx2: return avx2::table();
    default: return generic::table();
  }
}

}  // namespace burst::kernels
