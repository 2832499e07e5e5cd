// amxbf16-emulated: the AMX route with its tile primitives emulated in plain C++, for testing
// and debugging on processors without AMX (never chosen by auto). The tile registers are
// per-thread arrays; LDTILECFG, TILELOADD, TILESTORED, TILEZERO, TILERELEASE and TDPBF16PS
// follow the semantics Intel documents, and every rule whose violation faults on the processor
// throws here, so a layout bug fails loudly instead of computing junk. TDPBF16PS per row m of
// C: for each pair k of the 16 pairs, two fp32 FMAs into separate even and odd partial sums
// (te[n] += A[m][2k] B[k][2n], to[n] += A[m][2k+1] B[k][2n+1]), then C[m][n] += te[n] + to[n];
// round to nearest even, input denormals read as 0, output denormals flushed to 0, MXCSR
// neither read nor changed. Everything else (packing, the GEMM's blocking, the drivers) is the
// code the processor runs.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <utility>

#include "burst/error.h"
#include "kernels/amx.h"
#include "kernels/tile_ops.h"

namespace burst::kernels::amx {
namespace {

constexpr int kTiles = 8;  // palette 1

struct TileState {
  bool configured = false;
  TileConfig config;
  alignas(64) unsigned char data[kTiles][kTileRows][kTileBytes];
};

thread_local TileState tls_tiles;

template <typename... Parts>
[[noreturn]] void fault(const char* exception, Parts&&... parts) {
  fail("AMX emulation: ", std::forward<Parts>(parts)..., " (the processor raises ", exception, ")");
}

TileState& configured_tile(int tile, const char* op) {
  TileState& s = tls_tiles;
  if (tile < 0 || tile >= kTiles) fault("#UD", op, " on tmm", tile, ": palette 1 has tmm0..tmm7");
  if (!s.configured) fault("#UD", op, " on tmm", tile, " with no tile configuration loaded");
  if (s.config.rows[tile] == 0) fault("#UD", op, " on tmm", tile, ", which the configuration leaves unused");
  return s;
}

// One TDPBF16PS on raw tile rows, under the instruction's own floating-point environment
// (emulation::dot_bf16 sets MXCSR around it; kept out of line so no arithmetic moves across).
// Vector lane n holds column n: te and to are the even and odd partial sums of row m.
[[gnu::noinline]] void dot_rows(unsigned char (*c)[kTileBytes], const unsigned char (*a)[kTileBytes],
                                const unsigned char (*b)[kTileBytes], int rows, int n_out, int k_pairs) {
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  __m512 be[kTileRows], bo[kTileRows];  // B[2k][n] and B[2k + 1][n] widened
  for (int k = 0; k < k_pairs; ++k) {
    const __m512i words = _mm512_loadu_si512(b[k]);
    be[k] = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, words, 16));
    bo[k] = _mm512_castsi512_ps(_mm512_and_si512(words, high));
  }
  const auto live = static_cast<__mmask16>(n_out >= kTileCols ? 0xffff : (1u << n_out) - 1);
  for (int m = 0; m < rows; ++m) {
    std::uint32_t pairs[kTileCols];
    std::memcpy(pairs, a[m], sizeof(pairs));
    __m512 te = _mm512_setzero_ps(), to = _mm512_setzero_ps();
    for (int k = 0; k < k_pairs; ++k) {
      const __m512i pair = _mm512_set1_epi32(static_cast<int>(pairs[k]));
      te = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_maskz_slli_epi32(0xffff, pair, 16)), be[k], te);
      to = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(pair, high)), bo[k], to);
    }
    const __m512 sum = _mm512_add_ps(_mm512_loadu_ps(c[m]), _mm512_add_ps(te, to));
    _mm512_storeu_ps(c[m], _mm512_maskz_mov_ps(live, sum));
  }
  for (int m = rows; m < kTileRows; ++m) std::memset(c[m], 0, kTileBytes);
}

}  // namespace

namespace emulation {

void load_config(const TileConfig& config) {
  TileState& s = tls_tiles;
  if (config.palette > 1) fault("#GP", "LDTILECFG with palette ", int{config.palette}, ": only palette 1 exists");
  if (config.palette == 0) {
    release();
    return;
  }
  if (config.start_row != 0) fault("#GP", "LDTILECFG with start_row ", int{config.start_row}, ": Burst never restarts");
  for (unsigned char byte : config.reserved0) {
    if (byte != 0) fault("#GP", "LDTILECFG with reserved bytes 2..15 set");
  }
  for (int t = 0; t < 16; ++t) {
    const int rows = config.rows[t], colsb = config.colsb[t];
    if (t >= kTiles) {
      if (rows != 0 || colsb != 0) fault("#GP", "LDTILECFG configures tile ", t, ": palette 1 has tiles 0..7");
      continue;
    }
    if (rows > kTileRows) fault("#GP", "LDTILECFG gives tmm", t, " ", rows, " rows: at most 16");
    if (colsb > kTileBytes) fault("#GP", "LDTILECFG gives tmm", t, " ", colsb, " bytes per row: at most 64");
    if ((rows == 0) != (colsb == 0)) {
      fault("#GP", "LDTILECFG gives tmm", t, " ", rows, " rows of ", colsb, " bytes: an unused tile has both 0");
    }
  }
  s.config = config;
  s.configured = true;
  std::memset(s.data, 0, sizeof(s.data));
}

void release() {
  TileState& s = tls_tiles;
  s.configured = false;
  s.config = TileConfig{};
  std::memset(s.data, 0, sizeof(s.data));
}

void zero(int tile) {
  TileState& s = configured_tile(tile, "TILEZERO");
  std::memset(s.data[tile], 0, sizeof(s.data[tile]));
}

void load(int tile, const void* base, std::int64_t stride_bytes) {
  TileState& s = configured_tile(tile, "TILELOADD");
  const int rows = s.config.rows[tile], colsb = s.config.colsb[tile];
  std::memset(s.data[tile], 0, sizeof(s.data[tile]));
  const auto* src = static_cast<const unsigned char*>(base);
  for (int r = 0; r < rows; ++r) std::memcpy(s.data[tile][r], src + r * stride_bytes, static_cast<std::size_t>(colsb));
}

void store(int tile, void* base, std::int64_t stride_bytes) {
  TileState& s = configured_tile(tile, "TILESTORED");
  const int rows = s.config.rows[tile], colsb = s.config.colsb[tile];
  auto* dst = static_cast<unsigned char*>(base);
  for (int r = 0; r < rows; ++r) std::memcpy(dst + r * stride_bytes, s.data[tile][r], static_cast<std::size_t>(colsb));
}

void dot_bf16(int c, int a, int b) {
  TileState& s = configured_tile(c, "TDPBF16PS");
  configured_tile(a, "TDPBF16PS");
  configured_tile(b, "TDPBF16PS");
  if (c == a || c == b || a == b) fault("#UD", "TDPBF16PS tmm", c, ", tmm", a, ", tmm", b, ": operands must differ");
  const TileConfig& k = s.config;
  if (k.colsb[c] % 4 != 0 || k.colsb[a] % 4 != 0) {
    fault("#UD", "TDPBF16PS on rows of ", k.colsb[c], " and ", k.colsb[a], " bytes: whole fp32 values and bf16 pairs");
  }
  if (k.rows[c] != k.rows[a]) {
    fault("#UD", "TDPBF16PS: C tmm", c, " has ", int{k.rows[c]}, " rows but A tmm", a, " has ", int{k.rows[a]});
  }
  if (k.colsb[c] != k.colsb[b]) {
    fault("#UD", "TDPBF16PS: C tmm", c, " has ", k.colsb[c], " bytes per row but B tmm", b, " has ", k.colsb[b]);
  }
  if (k.colsb[a] / 4 != k.rows[b]) {
    fault("#UD", "TDPBF16PS: A tmm", a, " has ", k.colsb[a] / 4, " pairs per row but B tmm", b, " has ",
          int{k.rows[b]}, " rows");
  }
  // Round to nearest even (RC = 00), flush to zero (bit 15), denormals are zero (bit 6).
  const unsigned saved = _mm_getcsr();
  _mm_setcsr((saved & ~0x6000u) | 0x8040u);
  dot_rows(s.data[c], s.data[a], s.data[b], k.rows[c], k.colsb[c] / 4, k.colsb[a] / 4);
  _mm_setcsr(saved);
}

}  // namespace emulation
}  // namespace burst::kernels::amx

namespace burst::kernels::amxbf16_emulated {
namespace {

// The primitives on compile-time tile numbers, as amx_gemm.inc calls them.
struct Tiles {
  static void load_config(const amx::TileConfig& config) { amx::emulation::load_config(config); }
  static void release() { amx::emulation::release(); }
  template <int T>
  static void zero() {
    amx::emulation::zero(T);
  }
  template <int T>
  static void load(const void* base, std::int64_t stride) {
    amx::emulation::load(T, base, stride);
  }
  template <int T>
  static void store(void* base, std::int64_t stride) {
    amx::emulation::store(T, base, stride);
  }
  template <int C, int A, int B>
  static void dot() {
    amx::emulation::dot_bf16(C, A, B);
  }
};

}  // namespace

#include "kernels/amx_gemm.inc"

const TileOps& table() {
  static const TileOps ops = with_amx(avx512bf16::table(), Isa::kAmxBf16Emulated, amx::emulated_ops());
  return ops;
}

}  // namespace burst::kernels::amxbf16_emulated

namespace burst::kernels::amx {

const Ops& emulated_ops() {
  static const Ops ops{true, amxbf16_emulated::start, amxbf16_emulated::finish, amxbf16_emulated::gemm};
  return ops;
}

}  // namespace burst::kernels::amx
