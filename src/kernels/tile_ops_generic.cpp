// Tile operations compiled for the generic instruction set (flags in CMakeLists.txt).
#include <bit>
#include <cstdint>
#include <limits>

#include "kernels/tile_ops.h"

namespace burst::kernels::generic {
#define BURST_TILE_ISA Isa::kGeneric
#include "kernels/tile_ops_impl.inc"
#undef BURST_TILE_ISA
}  // namespace burst::kernels::generic
