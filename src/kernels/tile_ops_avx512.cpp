// Tile operations compiled for the avx512 instruction set (flags in CMakeLists.txt).
#include <bit>
#include <cstdint>
#include <limits>

#include "kernels/tile_ops.h"

namespace burst::kernels::avx512 {
#define BURST_TILE_ISA Isa::kAvx512
#include "kernels/tile_ops_impl.inc"
#undef BURST_TILE_ISA
}  // namespace burst::kernels::avx512
