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
// BURST_AMX_ON_TILE(OP) expands OP(t) for the literal t that equals the template's T.
#define BURST_AMX_ON_TILE(OP)                                                        \
  static_assert(T >= 0 && T < 8, "palette 1 has tiles 0..7");                        \
  if constexpr (T == 0) OP(0);                                                       \
  if constexpr (T == 1) OP(1);                                                       \
  if constexpr (T == 2) OP(2);                                                       \
  if constexpr (T == 3) OP(3);                                                       \
  if constexpr (T == 4) OP(4);                                                       \
  if constexpr (T == 5) OP(5);                                                       \
  if constexpr (T == 6) OP(6);                                                       \
  if constexpr (T == 7) OP(7)
#define BURST_AMX_ZERO(t) _tile_zero(t)
#define BURST_AMX_LOAD(t) _tile_loadd(t, base, stride)
#define BURST_AMX_STORE(t) _tile_stored(t, base, stride)
struct Tiles {
  static void load_config(const amx::TileConfig& config) { _tile_loadconfig(&config); }
  static void release() { _tile_release(); }
  template <int T>
  static void zero() {
    BURST_AMX_ON_TILE(BURST_AMX_ZERO);
  }
  template <int T>
  static void load(const void* base, std::int64_t stride) {
    BURST_AMX_ON_TILE(BURST_AMX_LOAD);
  }
  template <int T>
  static void store(void* base, std::int64_t stride) {
    BURST_AMX_ON_TILE(BURST_AMX_STORE);
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
#undef BURST_AMX_STORE
#undef BURST_AMX_LOAD
#undef BURST_AMX_ZERO
#undef BURST_AMX_ON_TILE

}  // namespace

#include "kernels/amx_gemm.inc"

const TileOps& table() {
  static const TileOps ops = with_amx(avx512bf16::table(), Isa::kAmxBf16, amx::hardware_ops());
  return ops;
}

}  // namespace burst::kernels::amxbf16

namespace burst::kernels::amx {

const Ops& hardware_ops() {
  static const Ops ops{false, amxbf16::start, amxbf16::finish, amxbf16::gemm};
  return ops;
}

}  // namespace burst::kernels::amx
