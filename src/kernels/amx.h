// The AMX-BF16 route's tile layer (README.md, "AMX"): a few tile primitives (configure, zero,
// load, store, TDPBF16PS) with two backends, the processor's instructions
// (tile_ops_amxbf16.cpp) and an emulation in plain C++ with the instruction's documented
// semantics (tile_ops_amxbf16_emulated.cpp), and everything else shared: one GEMM over the
// primitives (amx_gemm.inc) and the packing of operands into tile layouts (amx_layout.cpp).
//
// Every tile is configured as 16 rows x 64 bytes: C tiles are 16 x 16 fp32, A tiles 16 rows
// x 32 bf16 (16 pairs along the reduction), B tiles 16 pair rows x 16 columns, each 32-bit
// word a VNNI pair (B[2k][n] in the low half, B[2k + 1][n] in the high half). Operands are
// zero-padded to whole tiles, so one configuration serves every product.
#pragma once

#include <cstdint>

#include "burst/dtype.h"

namespace burst::kernels::amx {

constexpr int kTileRows = 16;   // rows of every tile
constexpr int kTileBytes = 64;  // bytes of every tile row
constexpr int kTileCols = 16;   // fp32 columns of a C tile, VNNI columns of a B tile
constexpr int kTileDepth = 32;  // bf16 elements of the reduction per A tile row

constexpr std::int64_t pad_rows(std::int64_t n) { return (n + kTileRows - 1) / kTileRows * kTileRows; }
constexpr std::int64_t pad_depth(std::int64_t n) { return (n + kTileDepth - 1) / kTileDepth * kTileDepth; }

// LDTILECFG's 64-byte operand, palette 1: byte 0 the palette, byte 1 the row to restart at,
// bytes 16..31 the bytes per row of tiles 0..7, bytes 48..55 their rows; the rest zero.
struct alignas(64) TileConfig {
  std::uint8_t palette = 0;
  std::uint8_t start_row = 0;
  std::uint8_t reserved0[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Palette 1 with tiles 0..7 at 16 rows x 64 bytes: what every product here runs on.
TileConfig uniform_config();

// C (rows x cols fp32, leading dimension ldc) = [C +] alpha * sum over parts of A_p B_p:
//   A: rows x depth bf16, row-major, leading dimension lda (elements); a_parts matrices,
//      a_part_stride elements apart;
//   B: depth x cols as VNNI panels (pack_b_*): panel p holds columns 16p..16p+15 as
//      depth / 2 rows of 16 words, so panel p starts at b + p * depth * 8 words; b_parts
//      of them, b_part_stride words apart.
// At most one of a_parts, b_parts exceeds 1: that side is an fp32 value split into bf16 parts
// (split_*), the other a bf16 input. rows, cols are multiples of 16, depth of 32. alpha
// applies only when accumulate is false (C is overwritten). For every 32-deep chunk of the
// reduction every part is added in turn, hi first.
struct Gemm {
  int rows = 0, cols = 0, depth = 0;
  const bf16_bits* a = nullptr;
  std::int64_t lda = 0, a_part_stride = 0;
  int a_parts = 1;
  const std::uint32_t* b = nullptr;
  std::int64_t b_part_stride = 0;
  int b_parts = 1;
  float* c = nullptr;
  std::int64_t ldc = 0;
  bool accumulate = false;
  float alpha = 1.0f;
};

// One backend's entry points. A thread calls start() before its first gemm and finish()
// after its last (Session); gemm() needs the configuration start() loads.
struct Ops {
  bool emulated;
  void (*start)();
  void (*finish)();
  void (*gemm)(const Gemm& g);
};

// The tile state of the calling thread for the lifetime of a task.
class Session {
 public:
  explicit Session(const Ops& ops) : ops_(ops) { ops_.start(); }
  ~Session() { ops_.finish(); }
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

 private:
  const Ops& ops_;
};

// The backends: the processor's instructions (call only where amx_bf16_status().permitted:
// elsewhere they fault) and their emulation (AVX-512 code, like the layouts below).
const Ops& hardware_ops();
const Ops& emulated_ops();

// The emulation's primitives with run-time tile numbers, for tests: each throws burst::Error
// where the processor would fault (#GP for a bad configuration, #UD for a tile used
// unconfigured or shapes TDPBF16PS does not accept), naming the rule.
namespace emulation {
void load_config(const TileConfig& config);
void release();
void zero(int tile);
void load(int tile, const void* base, std::int64_t stride_bytes);
void store(int tile, void* base, std::int64_t stride_bytes);
void dot_bf16(int c, int a, int b);
}  // namespace emulation

// Operand layouts (amx_layout.cpp; AVX-512 code, like every AMX processor has). Sources are
// bf16 rows with a leading dimension in elements; padding is zero.
//
// A operand X: `rows` rows of `cols` values into dst (pad_rows(rows) x ld_dst, ld_dst >=
// pad_depth(cols)).
void pack_a_rows(const bf16_bits* x, std::int64_t ld, int rows, int cols, bf16_bits* dst, std::int64_t ld_dst);
// A operand Y^T: Y is r rows x d; dst is pad_rows(d) x ld_dst (ld_dst >= pad_depth(r)) with
// dst[x][i] = Y[i][x]. Non-finite values of Y are written as 0 (the caller adds their terms:
// detail::add_non_finite_terms); returns whether there were any.
bool pack_a_transposed(const bf16_bits* y, std::int64_t ld, int r, int d, bf16_bits* dst, std::int64_t ld_dst);
// B operand of X Y^T: Y is n rows x d, the reduction runs along d: panel p, pair row k holds
// word (Y[16p + j][2k], Y[16p + j][2k + 1]) in column j; pad_rows(n) / 16 panels of
// pad_depth(d) / 2 rows.
void pack_b_transposed(const bf16_bits* y, std::int64_t ld, int n, int d, std::uint32_t* dst);
// B operand of X Y: Y is r rows x d, the reduction runs along r: panel p, pair row k holds
// (Y[2k][16p + j], Y[2k + 1][16p + j]) in column j; pad_rows(d) / 16 panels of pad_depth(r) / 2
// rows. Non-finite values are written as 0 (as pack_a_transposed); returns whether there were any.
bool pack_b_rows(const bf16_bits* y, std::int64_t ld, int r, int d, std::uint32_t* dst);

// The split of an fp32 operand into `parts` bf16 values whose sum is its value: hi = bf16(x),
// mid = bf16(x - hi), lo = bf16(x - hi - mid), each rounded to nearest even (three parts hold
// all 24 bits of a normal fp32, two hold 16 or 17). A non-finite hi (x NaN or infinite) gets
// zero lower parts, so the sum stays x.
//
// F (rows x cols, leading dimension ld) as A operands: part q at dst + q * part_stride,
// pad_rows(rows) x ld_dst (ld_dst >= pad_depth(cols)).
void split_a(const float* f, std::int64_t ld, int rows, int cols, int parts, bf16_bits* dst, std::int64_t ld_dst,
             std::int64_t part_stride);
// F (r rows x cols, leading dimension ld; the reduction runs along r) as B operands in
// pack_b_rows's layout: part q at dst + q * part_stride words.
void split_b(const float* f, std::int64_t ld, int r, int cols, int parts, std::uint32_t* dst, std::int64_t part_stride);

// Words of a B operand for a reduction of `depth` and `cols` columns; elements of an A operand.
constexpr std::int64_t b_words(std::int64_t depth, std::int64_t cols) { return pad_depth(depth) / 2 * pad_rows(cols); }
constexpr std::int64_t a_elements(std::int64_t rows, std::int64_t depth) { return pad_rows(rows) * pad_depth(depth); }

}  // namespace burst::kernels::amx
