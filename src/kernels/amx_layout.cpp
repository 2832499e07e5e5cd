// Operand layouts of the AMX route (amx.h), shared by both tile backends: AVX-512 packing of
// bf16 rows into A and VNNI B tiles, and the split of fp32 operands into bf16 parts. Compiled
// with the AVX-512 flags (CMakeLists.txt); only the AMX implementations call it.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/amx.h"

namespace burst::kernels::amx {
namespace {

constexpr int kPalette1Tiles = 8;

// The unmasked forms of these read _mm512_undefined_*, which GCC 12 reports as
// maybe-uninitialized; zero-masking with every lane set is the same instruction.
constexpr __mmask16 kAll16 = 0xffff;
constexpr __mmask8 kAll8 = 0xff;
inline __m512i srli32(__m512i a, unsigned n) { return _mm512_maskz_srli_epi32(kAll16, a, n); }
inline __m512i slli32(__m512i a, unsigned n) { return _mm512_maskz_slli_epi32(kAll16, a, n); }

// Transposes a 16 x 16 block of 32-bit words, row i in r[i]: in three stages, pairs of words,
// pairs of pairs, then 128-bit lanes.
inline void transpose16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_maskz_unpacklo_epi32(kAll16, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_epi32(kAll16, r[i], r[i + 1]);
  }
  // In lane L (words 4L..4L+3): t[i] holds columns 4L, 4L + 1 of rows i, i + 1 interleaved,
  // t[i + 1] columns 4L + 2, 4L + 3.
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_maskz_unpacklo_epi64(kAll8, t[i], t[i + 2]);
    r[i + 1] = _mm512_maskz_unpackhi_epi64(kAll8, t[i], t[i + 2]);
    r[i + 2] = _mm512_maskz_unpacklo_epi64(kAll8, t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_maskz_unpackhi_epi64(kAll8, t[i + 1], t[i + 3]);
  }
  // Now lane L of r[4g + c] is column 4L + c of rows 4g..4g+3; row 4L + c of the result
  // gathers lane L of r[c], r[4 + c], r[8 + c], r[12 + c].
  for (int c = 0; c < 4; ++c) {
    const __m512i x0 = _mm512_maskz_shuffle_i32x4(kAll16, r[c], r[4 + c], 0x88);
    const __m512i x1 = _mm512_maskz_shuffle_i32x4(kAll16, r[c], r[4 + c], 0xdd);
    const __m512i y0 = _mm512_maskz_shuffle_i32x4(kAll16, r[8 + c], r[12 + c], 0x88);
    const __m512i y1 = _mm512_maskz_shuffle_i32x4(kAll16, r[8 + c], r[12 + c], 0xdd);
    t[c] = _mm512_maskz_shuffle_i32x4(kAll16, x0, y0, 0x88);
    t[8 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x0, y0, 0xdd);
    t[4 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x1, y1, 0x88);
    t[12 + c] = _mm512_maskz_shuffle_i32x4(kAll16, x1, y1, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Mask of the first n (0..32) 16-bit elements.
inline __mmask32 first32(int n) { return n >= 32 ? 0xffffffffu : n <= 0 ? 0u : (1u << n) - 1; }
inline __mmask16 first16(int n) { return static_cast<__mmask16>(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1); }

// 16 bf16 values of a row (the first n), non-finite ones zeroed; `found` records any.
inline __m256i load16_finite(const bf16_bits* p, int n, bool& found) {
  const __m256i v = _mm256_maskz_loadu_epi16(first16(n), p);
  const __m256i exponent = _mm256_set1_epi16(0x7f80);
  const __mmask16 bad = _mm256_cmpeq_epi16_mask(_mm256_and_si256(v, exponent), exponent);
  found |= bad != 0;
  return _mm256_maskz_mov_epi16(static_cast<__mmask16>(~bad), v);
}

// Words (a[j], b[j]) for j = 0..15: a in the low halves.
inline __m512i interleave16(__m256i a, __m256i b) {
  const __m512i index = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37,
                                         5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
  return _mm512_permutex2var_epi16(_mm512_castsi256_si512(a), index, _mm512_castsi256_si512(b));
}

// Round to nearest even to bf16 (in the low 16 bits of each 32-bit lane), NaN kept quiet:
// float_to_bf16 on 16 lanes.
inline __m512i round_bf16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(srli32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded = srli32(_mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb)), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(srli32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_mask_mov_epi32(rounded, nan, quiet);
}

// parts bf16 values of x (amx.h, "The split"), each in the low 16 bits of a 32-bit lane.
inline void split16(__m512 x, int parts, __m512i out[3]) {
  __m512 rest = x;
  for (int q = 0; q < parts; ++q) {
    out[q] = round_bf16(rest);
    if (q + 1 == parts) break;
    const __m512 part = _mm512_castsi512_ps(slli32(out[q], 16));
    // A non-finite part (x NaN or infinite) leaves nothing for the lower parts.
    const __m512i exponent = _mm512_set1_epi32(0x7f80);
    const __mmask16 finite = _mm512_cmpneq_epi32_mask(_mm512_and_si512(out[q], exponent), exponent);
    rest = _mm512_maskz_sub_ps(finite, rest, part);
  }
}

}  // namespace

TileConfig uniform_config() {
  TileConfig c;
  c.palette = 1;
  for (int t = 0; t < kPalette1Tiles; ++t) {
    c.colsb[t] = kTileBytes;
    c.rows[t] = kTileRows;
  }
  return c;
}

void pack_a_rows(const bf16_bits* x, std::int64_t ld, int rows, int cols, bf16_bits* dst, std::int64_t ld_dst) {
  const std::int64_t padded = pad_rows(rows);
  for (std::int64_t i = 0; i < padded; ++i) {
    bf16_bits* out = dst + i * ld_dst;
    const int n = i < rows ? cols : 0;
    if (n > 0) std::memcpy(out, x + i * ld, static_cast<std::size_t>(n) * sizeof(bf16_bits));
    std::fill(out + n, out + ld_dst, bf16_bits{0});
  }
}

bool pack_a_transposed(const bf16_bits* y, std::int64_t ld, int r, int d, bf16_bits* dst, std::int64_t ld_dst) {
  bool found = false;
  const std::int64_t depth = pad_depth(r);
  for (int x0 = 0; x0 < pad_rows(d); x0 += kTileCols) {
    for (int i0 = 0; i0 < depth; i0 += kTileDepth) {
      // Word k of column x: (Y[i0 + 2k][x], Y[i0 + 2k + 1][x]); transposed, row x of the
      // block is Y[i0..i0+31][x] in order: one A tile row.
      __m512i w[16];
      for (int k = 0; k < 16; ++k) {
        const int i = i0 + 2 * k;
        const __m256i a = i < r ? load16_finite(y + i * ld + x0, d - x0, found) : _mm256_setzero_si256();
        const __m256i b = i + 1 < r ? load16_finite(y + (i + 1) * ld + x0, d - x0, found) : _mm256_setzero_si256();
        w[k] = interleave16(a, b);
      }
      transpose16(w);
      for (int x = 0; x < kTileCols; ++x) _mm512_storeu_si512(dst + (x0 + x) * ld_dst + i0, w[x]);
    }
    for (int x = x0; x < x0 + kTileCols; ++x) std::fill(dst + x * ld_dst + depth, dst + (x + 1) * ld_dst, bf16_bits{0});
  }
  return found;
}

void pack_b_transposed(const bf16_bits* y, std::int64_t ld, int n, int d, std::uint32_t* dst) {
  const std::int64_t pairs = pad_depth(d) / 2;
  for (int p = 0; p < pad_rows(n) / kTileCols; ++p) {
    for (std::int64_t k0 = 0; k0 < pairs; k0 += kTileCols) {
      // Row j of the block: words k0..k0+15 of key 16p + j (bf16 elements 2 k0 .. 2 k0 + 31).
      __m512i w[16];
      const int valid = d - static_cast<int>(2 * k0);
      for (int j = 0; j < kTileCols; ++j) {
        const int row = p * kTileCols + j;
        w[j] = row < n ? _mm512_maskz_loadu_epi16(first32(valid), y + row * ld + 2 * k0) : _mm512_setzero_si512();
      }
      transpose16(w);
      std::uint32_t* out = dst + (p * pairs + k0) * kTileCols;
      for (int k = 0; k < kTileCols; ++k) _mm512_storeu_si512(out + k * kTileCols, w[k]);
    }
  }
}

bool pack_b_rows(const bf16_bits* y, std::int64_t ld, int r, int d, std::uint32_t* dst) {
  bool found = false;
  const std::int64_t pairs = pad_depth(r) / 2;
  for (std::int64_t k = 0; k < pairs; ++k) {
    const std::int64_t i = 2 * k;
    for (int p = 0; p < pad_rows(d) / kTileCols; ++p) {
      const int x0 = p * kTileCols;
      const __m256i a = i < r ? load16_finite(y + i * ld + x0, d - x0, found) : _mm256_setzero_si256();
      const __m256i b = i + 1 < r ? load16_finite(y + (i + 1) * ld + x0, d - x0, found) : _mm256_setzero_si256();
      _mm512_storeu_si512(dst + (p * pairs + k) * kTileCols, interleave16(a, b));
    }
  }
  return found;
}

void split_a(const float* f, std::int64_t ld, int rows, int cols, int parts, bf16_bits* dst, std::int64_t ld_dst,
             std::int64_t part_stride) {
  const std::int64_t padded = pad_rows(rows);
  for (std::int64_t i = 0; i < padded; ++i) {
    for (std::int64_t j = 0; j < ld_dst; j += kTileCols) {
      const int n = i < rows ? static_cast<int>(std::min<std::int64_t>(kTileCols, cols - j)) : 0;
      __m512i part[3];
      split16(_mm512_maskz_loadu_ps(first16(n), n > 0 ? f + i * ld + j : f), parts, part);
      for (int q = 0; q < parts; ++q) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + q * part_stride + i * ld_dst + j),
                            _mm512_maskz_cvtepi32_epi16(kAll16, part[q]));
      }
    }
  }
}

void split_b(const float* f, std::int64_t ld, int r, int cols, int parts, std::uint32_t* dst, std::int64_t part_stride) {
  const std::int64_t pairs = pad_depth(r) / 2;
  for (std::int64_t k = 0; k < pairs; ++k) {
    const std::int64_t i = 2 * k;
    for (int p = 0; p < pad_rows(cols) / kTileCols; ++p) {
      const int n = cols - p * kTileCols;
      const float* row = f + p * kTileCols;
      __m512i even[3], odd[3];
      split16(i < r ? _mm512_maskz_loadu_ps(first16(n), row + i * ld) : _mm512_setzero_ps(), parts, even);
      split16(i + 1 < r ? _mm512_maskz_loadu_ps(first16(n), row + (i + 1) * ld) : _mm512_setzero_ps(), parts, odd);
      for (int q = 0; q < parts; ++q) {
        const __m512i words = _mm512_or_si512(even[q], slli32(odd[q], 16));
        _mm512_storeu_si512(dst + q * part_stride + (p * pairs + k) * kTileCols, words);
      }
    }
  }
}

}  // namespace burst::kernels::amx
