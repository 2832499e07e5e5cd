// Compute emulation of the forward and backward calls (burst/kernels.h, EmulatedCompute).
#pragma once

#include "kernels/detail.h"

namespace burst::kernels::detail {

// Query-key pairs in the tiles a call computes (its tile grid less the tiles its mask
// skips), per batch entry and query head.
double computed_tile_area(const Geometry& g, const AttentionOptions& opt);
// The model's time for the call: computed_tile_area x 4 d h b FLOPs (backward: 10 d h b) at
// the pass's rate, plus the per-call cost.
double emulated_seconds(const Geometry& g, const AttentionOptions& opt, bool backward);
// Waits `seconds` passively, calling opt.progress about every 200 us.
void wait_emulated(double seconds, const AttentionOptions& opt);

}  // namespace burst::kernels::detail
