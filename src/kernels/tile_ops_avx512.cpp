// Tile operations compiled for the avx512 instruction set (flags in CMakeLists.txt), with the
// register-blocked lanes-layout products of the fused fp32 route.
#include <immintrin.h>

#include <array>
#include <bit>
#include <cstdint>
#include <limits>
#include <utility>

#include "kernels/tile_ops.h"

namespace burst::kernels::avx512 {
#define BURST_TILE_ISA Isa::kAvx512
#define BURST_TILE_LANES
#include "kernels/tile_ops_lanes.inc"
#include "kernels/tile_ops_impl.inc"
#undef BURST_TILE_LANES
#undef BURST_TILE_ISA
}  // namespace burst::kernels::avx512
