// amxbf16: the AMX route on the processor's tile instructions (compiled with -mamx-tile
// -mamx-bf16; run only where amx_bf16_status().permitted). The element-wise work is
// avx512bf16's; bf16 inputs' products go through amx_gemm.inc on the intrinsics below, fp32
// inputs take the fused fp32 route as on avx512bf16. Unmeasured: written on a machine whose
// processor hides AMX (docs/performance.md); tile_ops_amxbf16_emulated.cpp runs the same code
// with the instructions emulated.
#include <immintrin.h>

#include <cstdint>

#include "kernels/amx.h"
#include "kernels/tile_ops.h"

namespace burst::kernels::amxbf16 {
namespace {

// The intrinsics paste their tile number into the instruction text, so each takes a literal:
// one branch per tile, chosen at compile time.
struct Tiles {
  static void load_config(const amx::TileConfig& config) { _tile_loadconfig(&config); }
  static void release() { _tile_release(); }
  template <int T>
  static void zero() {
    static_assert(T >= 0 && T < 8, "palette 1 has tiles 0..7");
#define BURST_AMX_ZERO(t) \
  if constexpr (T == t) _tile_zero(t);
    BURST_AMX_ZERO(0) BURST_AMX_ZERO(1) BURST_AMX_ZERO(2) BURST_AMX_ZERO(3)
    BURST_AMX_ZERO(4) BURST_AMX_ZERO(5) BURST_AMX_ZERO(6) BURST_AMX_ZERO(7)
#undef BURST_AMX_ZERO
  }
  template <int T>
  static void load(const void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < 8, "palette 1 has tiles 0..7");
#define BURST_AMX_LOAD(t) \
  if constexpr (T == t) _tile_loadd(t, base, stride);
    BURST_AMX_LOAD(0) BURST_AMX_LOAD(1) BURST_AMX_LOAD(2) BURST_AMX_LOAD(3)
    BURST_AMX_LOAD(4) BURST_AMX_LOAD(5) BURST_AMX_LOAD(6) BURST_AMX_LOAD(7)
#undef BURST_AMX_LOAD
  }
  template <int T>
  static void store(void* base, std::int64_t stride) {
    static_assert(T >= 0 && T < 8, "palette 1 has tiles 0..7");
#define BURST_AMX_STORE(t) \
  if constexpr (T == t) _tile_stored(t, base, stride);
    BURST_AMX_STORE(0) BURST_AMX_STORE(1) BURST_AMX_STORE(2) BURST_AMX_STORE(3)
    BURST_AMX_STORE(4) BURST_AMX_STORE(5) BURST_AMX_STORE(6) BURST_AMX_STORE(7)
#undef BURST_AMX_STORE
  }
  // The four (C, A, B) triples of amx_gemm.inc's 2 x 2 block.
  template <int C, int A, int B>
  static void dot() {
    static_assert((C == 0 && A == 4 && B == 6) || (C == 1 && A == 4 && B == 7) || (C == 2 && A == 5 && B == 6) ||
                      (C == 3 && A == 5 && B == 7),
                  "amx_gemm.inc's blocks");
    if constexpr (C == 0) _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 1) _tile_dpbf16ps(1, 4, 7);
    if constexpr (C == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (C == 3) _tile_dpbf16ps(3, 5, 7);
  }
};

}  // namespace

#include "kernels/amx_gemm.inc"

const TileOps& table() {
  static const TileOps ops = [] {
    TileOps t = avx512bf16::table();
    t.isa = Isa::kAmxBf16;
    t.fused_bf16 = false;
    t.amx = &amx::hardware_ops();
    return t;
  }();
  return ops;
}

}  // namespace burst::kernels::amxbf16

namespace burst::kernels::amx {

const Ops& hardware_ops() {
  static const Ops ops{false, amxbf16::start, amxbf16::finish, amxbf16::gemm};
  return ops;
}

}  // namespace burst::kernels::amx
