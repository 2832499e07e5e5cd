// Compute emulation (burst/kernels.h, EmulatedCompute): the tiles a call would compute,
// priced by the model, waited for passively.
#include "kernels/emulate.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "burst/error.h"

namespace burst::kernels::detail {

double computed_tile_area(const Geometry& g, const AttentionOptions& opt) {
  const BlockBounds qb = block_bounds(opt.q_pos, g.seqlen_q, g.block_m);
  const BlockBounds kb = block_bounds(opt.k_pos, g.seqlen_k, g.block_n);
  double area = 0;
  for (std::int64_t i = 0; i < g.n_qblocks; ++i) {
    const std::int64_t rows = std::min<std::int64_t>(g.block_m, g.seqlen_q - i * g.block_m);
    for (std::int64_t j = 0; j < g.n_kblocks; ++j) {
      if (classify(opt.mask, qb.lo[i], qb.hi[i], kb.lo[j], kb.hi[j]) == TileVisibility::kNone) continue;
      area += static_cast<double>(rows * std::min<std::int64_t>(g.block_n, g.seqlen_k - j * g.block_n));
    }
  }
  return area;
}

double emulated_seconds(const Geometry& g, const AttentionOptions& opt, bool backward) {
  const EmulatedCompute& e = *opt.emulate;
  const double rate = backward ? e.backward_flops : e.forward_flops;
  BURST_CHECK(rate > 0 && e.call_seconds >= 0, "emulate: ", backward ? "backward" : "forward",
              " FLOP/s must be > 0 and call seconds >= 0, got ", rate, " and ", e.call_seconds);
  const double per_pair = (backward ? 10.0 : 4.0) * static_cast<double>(g.d * g.n_heads_q * g.b);
  return computed_tile_area(g, opt) * per_pair / rate + e.call_seconds;
}

void wait_emulated(double seconds, const AttentionOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  // Calls progress as often as the communicator asks (progress_due), else every 200 us, as
  // short as a computing call's tiles, so transfers keep moving while it waits; sleeping
  // leaves the cores to the other ranks. At least 20 us apart: an overdue send is released
  // by the progress call itself.
  constexpr auto kSlice = std::chrono::microseconds(200), kMinSleep = std::chrono::microseconds(20);
  for (auto now = Clock::now(); now < end; now = Clock::now()) {
    if (opt.progress) opt.progress();
    const auto due = opt.progress_due ? std::max(opt.progress_due(), now + kMinSleep) : now + kSlice;
    std::this_thread::sleep_until(std::min(end, due));
  }
}

}  // namespace burst::kernels::detail
