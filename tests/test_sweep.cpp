// Forward and backward against the double reference over a catalog of shapes, masks, head
// counts, position sets and dtypes, for every instruction-set implementation on this host.
// Outputs are pre-filled with NaN; gradient accumulators with random values that are
// subtracted afterwards, so both "writes every element" and "accumulates" are checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>

#include "burst/kernels.h"
#include "support.h"

namespace burst {
namespace {

using kernels::AttentionOptions;
using kernels::Isa;

struct Case {
  std::string name;
  std::int64_t b = 1, sq = 65, sk = 65, hq = 2, hkv = 2, d = 64;
  kernels::MaskSpec mask;
  std::int64_t q_offset = 0, k_offset = 0;
  std::vector<std::int64_t> q_ids, k_ids;  // explicit positions (zigzag, striped)
  std::vector<std::int64_t> documents;     // boundaries of packed documents (mask.documents)
  DType dtype = DType::kF32;
  bool bhsd = false;  // store tensors as [b, h, s, d] and pass strided views
  int block_m = 0, block_n = 0;  // 0: the kernels' default tile
};

// Names the case in test output instead of dumping its bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::string clean(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

std::vector<Case> catalog() {
  std::vector<Case> cases;
  auto add = [&](Case c) { cases.push_back(std::move(c)); };
  // Sequence lengths around the edges of 64 x 128 tiles and of the default tile (256 x 256
  // for these head dims), GQA 2:1.
  for (std::int64_t s : {1, 2, 63, 64, 65, 97, 127, 128, 129, 1025}) {
    for (bool causal : {false, true}) {
      Case c;
      c.name = "seqlen" + std::to_string(s) + (causal ? "_causal" : "") + "_tile64x128";
      c.sq = c.sk = s;
      c.hkv = 1;
      c.mask.causal = causal;
      c.block_m = 64;
      c.block_n = 128;
      add(c);
    }
  }
  for (std::int64_t s : {255, 256, 257, 513}) {
    for (bool causal : {false, true}) {
      Case c;
      c.name = "seqlen" + std::to_string(s) + (causal ? "_causal" : "");
      c.sq = c.sk = s;
      c.hkv = 1;
      c.mask.causal = causal;
      add(c);
    }
  }
  // Head dims, causal, seqlen_q != seqlen_k with bottom-right alignment.
  for (std::int64_t d : {1, 8, 63, 64, 80, 128, 256}) {
    Case c;
    c.name = "headdim" + std::to_string(d);
    c.sq = 97;
    c.sk = 130;
    c.d = d;
    c.q_offset = c.sk - c.sq;
    c.mask.causal = true;
    add(c);
  }
  // GQA ratios and MQA.
  for (std::int64_t g : {1, 2, 4, 8}) {
    Case c;
    c.name = "gqa" + std::to_string(g);
    c.sq = 70;
    c.sk = 200;
    c.hkv = 2;
    c.hq = 2 * g;
    c.d = 32;
    add(c);
  }
  {
    Case c;
    c.name = "mqa8_causal";
    c.sq = c.sk = 150;
    c.hkv = 1;
    c.hq = 8;
    c.d = 16;
    c.mask.causal = true;
    add(c);
  }
  // Sliding windows (left, right), with and without causal.
  for (auto [l, r, causal] : {std::tuple{16, 0, false}, {0, 16, false}, {7, 9, false},
                              {-1, 5, false}, {5, -1, false}, {32, -1, true}, {0, 0, false},
                              {200, 3, true}}) {
    Case c;
    c.name = "window" + std::to_string(l) + "_" + std::to_string(r) + (causal ? "_causal" : "");
    c.sq = c.sk = 150;
    c.mask = {causal, l, r, {}};
    add(c);
  }
  // Unequal lengths: bottom-right causal; more queries than keys leaves early rows empty.
  for (auto [sq, sk] : {std::pair{50, 300}, {300, 50}, {1, 513}, {513, 1}}) {
    Case c;
    c.name = "sq" + std::to_string(sq) + "_sk" + std::to_string(sk) + "_causal";
    c.sq = sq;
    c.sk = sk;
    c.q_offset = sk - sq;
    c.mask.causal = true;
    add(c);
  }
  // Ring shapes: a rank's zigzag or striped queries against another rank's keys.
  auto shard_pair = [&](std::string name, std::vector<std::int64_t> qi, std::vector<std::int64_t> ki,
                        kernels::MaskSpec mask, DType dtype) {
    Case c;
    c.name = std::move(name);
    c.sq = static_cast<std::int64_t>(qi.size());
    c.sk = static_cast<std::int64_t>(ki.size());
    c.q_ids = std::move(qi);
    c.k_ids = std::move(ki);
    c.mask = mask;
    c.dtype = dtype;
    add(c);
  };
  using testing::striped_positions;
  using testing::zigzag_positions;
  shard_pair("zigzag_q1_k2", zigzag_positions(403, 4, 1), zigzag_positions(403, 4, 2), {true, -1, -1, {}}, DType::kF32);
  shard_pair("zigzag_q3_k0", zigzag_positions(403, 4, 3), zigzag_positions(403, 4, 0), {true, -1, -1, {}}, DType::kF32);
  shard_pair("zigzag_q0_k3", zigzag_positions(403, 4, 0), zigzag_positions(403, 4, 3), {true, -1, -1, {}}, DType::kF32);
  shard_pair("striped_q2_k0", striped_positions(301, 3, 2), striped_positions(301, 3, 0), {true, -1, -1, {}}, DType::kF32);
  shard_pair("striped_q0_k2", striped_positions(301, 3, 0), striped_positions(301, 3, 2), {true, -1, -1, {}}, DType::kF32);
  shard_pair("striped_window", striped_positions(301, 3, 1), striped_positions(301, 3, 1), {false, 20, 20, {}}, DType::kF32);
  shard_pair("zigzag_bf16", zigzag_positions(403, 4, 2), zigzag_positions(403, 4, 1), {true, -1, -1, {}}, DType::kBF16);
  // bf16 storage.
  for (bool causal : {false, true}) {
    Case c;
    c.name = std::string("bf16_d128") + (causal ? "_causal" : "");
    c.sq = c.sk = 129;
    c.d = 128;
    c.hq = 4;
    c.hkv = 2;
    c.mask.causal = causal;
    c.dtype = DType::kBF16;
    add(c);
  }
  // bf16 with odd and ragged head dims (the dot-product route pairs elements along d) and
  // key counts that are not multiples of its 32-column panels.
  for (std::int64_t d : {1, 7, 63, 80, 256}) {
    Case c;
    c.name = "bf16_headdim" + std::to_string(d);
    c.sq = 97;
    c.sk = 130;
    c.d = d;
    c.q_offset = c.sk - c.sq;
    c.mask.causal = true;
    c.dtype = DType::kBF16;
    add(c);
  }
  // bf16 with a tiny head dim and few keys (and few queries, which dK sums over), where the
  // tolerance is smallest: P and dS must keep fp32 precision through every product (the AMX
  // route's split, docs/numerics.md).
  for (auto [sq, sk, d] : {std::tuple{64, 3, 2}, {64, 9, 1}, {3, 3, 1}, {5, 2, 2}}) {
    Case c;
    c.name = "bf16_sq" + std::to_string(sq) + "_sk" + std::to_string(sk) + "_headdim" + std::to_string(d);
    c.sq = sq;
    c.sk = sk;
    c.d = d;
    c.dtype = DType::kBF16;
    add(c);
  }
  // Tiles whose sizes are not multiples of the fused route's 16-lane vectors or 6-row
  // register blocks (lanes padding, ragged strips), with a window and GQA.
  for (auto [bm, bn] : {std::pair{40, 24}, {24, 40}, {16, 7}}) {
    Case c;
    c.name = "tile" + std::to_string(bm) + "x" + std::to_string(bn) + "_window_causal";
    c.sq = 131;
    c.sk = 140;
    c.q_offset = c.sk - c.sq;
    c.hq = 4;
    c.hkv = 2;
    c.d = 20;
    c.mask = {true, 50, -1, {}};
    c.block_m = bm;
    c.block_n = bn;
    add(c);
  }
  // bf16 on the same kind of ragged tiles with a window, GQA and an odd head dim (the fused
  // bf16 route widens K/V or Q/dO tiles per tile), and more queries than keys.
  for (auto [bm, bn] : {std::pair{40, 24}, {16, 7}}) {
    Case c;
    c.name = "bf16_tile" + std::to_string(bm) + "x" + std::to_string(bn) + "_window_causal";
    c.sq = 131;
    c.sk = 140;
    c.q_offset = c.sk - c.sq;
    c.hq = 4;
    c.hkv = 2;
    c.d = 21;
    c.mask = {true, 50, -1, {}};
    c.block_m = bm;
    c.block_n = bn;
    c.dtype = DType::kBF16;
    add(c);
  }
  {
    Case c;
    c.name = "bf16_sq300_sk50_causal";
    c.sq = 300;
    c.sk = 50;
    c.q_offset = c.sk - c.sq;
    c.mask.causal = true;
    c.dtype = DType::kBF16;
    add(c);
  }
  // Packed documents (block-diagonal masks): documents of length 1, shorter and longer than a
  // tile, one document only, many tiny ones; with causal, windows, GQA, bf16, unequal
  // lengths, small tiles and the shard positions of a ring.
  auto boundaries = [](const std::vector<std::int64_t>& lengths) {
    std::vector<std::int64_t> c{0};
    for (std::int64_t l : lengths) c.push_back(c.back() + l);
    return c;
  };
  const std::vector<std::int64_t> mixed = boundaries({1, 40, 3, 130, 1, 60, 65});  // 300 tokens
  std::vector<std::int64_t> tiny_lengths;
  for (std::int64_t i = 0, total = 0; total < 257; ++i) {
    tiny_lengths.push_back(std::min<std::int64_t>(1 + (i * 7) % 3, 257 - total));
    total += tiny_lengths.back();
  }
  const std::vector<std::int64_t> tiny = boundaries(tiny_lengths);
  struct DocCase {
    const char* name;
    std::vector<std::int64_t> documents;
    kernels::MaskSpec mask;
    DType dtype;
    int block_m, block_n;
  };
  for (const DocCase& dc : {DocCase{"docs_mixed", mixed, {false, -1, -1, {}}, DType::kF32, 0, 0},
                            DocCase{"docs_mixed_causal", mixed, {true, -1, -1, {}}, DType::kF32, 0, 0},
                            DocCase{"docs_mixed_causal_tile16x7", mixed, {true, -1, -1, {}}, DType::kF32, 16, 7},
                            DocCase{"docs_window20_causal", mixed, {true, 20, -1, {}}, DType::kF32, 32, 64},
                            DocCase{"docs_window5_5", mixed, {false, 5, 5, {}}, DType::kF32, 0, 0},
                            DocCase{"docs_mixed_causal_bf16", mixed, {true, -1, -1, {}}, DType::kBF16, 0, 0},
                            DocCase{"docs_tiny_causal", tiny, {true, -1, -1, {}}, DType::kF32, 40, 24},
                            DocCase{"docs_tiny", tiny, {false, -1, -1, {}}, DType::kBF16, 0, 0},
                            DocCase{"docs_one_causal", boundaries({300}), {true, -1, -1, {}}, DType::kF32, 64, 128}}) {
    Case c;
    c.name = dc.name;
    c.sq = c.sk = dc.documents.back();
    c.hq = 4;
    c.hkv = 2;
    c.d = dc.dtype == DType::kBF16 ? 128 : 40;
    c.mask = dc.mask;
    c.documents = dc.documents;
    c.dtype = dc.dtype;
    c.block_m = dc.block_m;
    c.block_n = dc.block_n;
    add(c);
  }
  {
    // The last 97 queries of the mixed documents against all their keys.
    Case c;
    c.name = "docs_sq97_sk300_causal";
    c.sq = 97;
    c.sk = 300;
    c.q_offset = c.sk - c.sq;
    c.mask.causal = true;
    c.documents = mixed;
    add(c);
  }
  for (auto [name, rank_q, rank_k] : {std::tuple{"docs_zigzag_q1_k2", 1, 2}, {"docs_zigzag_q3_k0", 3, 0}, {"docs_zigzag_q2_k2", 2, 2}}) {
    shard_pair(name, zigzag_positions(300, 4, rank_q), zigzag_positions(300, 4, rank_k), {true, -1, -1, {}}, DType::kF32);
    cases.back().documents = mixed;
  }
  shard_pair("docs_striped_q0_k2", striped_positions(300, 3, 0), striped_positions(300, 3, 2), {true, -1, -1, {}},
             DType::kF32);
  cases.back().documents = mixed;
  // Batch > 1 and strided [b, h, s, d] storage.
  {
    Case c;
    c.name = "batch3_bhsd_causal";
    c.b = 3;
    c.sq = c.sk = 100;
    c.hq = 4;
    c.hkv = 2;
    c.d = 40;
    c.mask.causal = true;
    c.bhsd = true;
    add(c);
  }
  return cases;
}

// A copy of a tensor stored [b, h, s, d], viewed with [b, s, h, d] indexing through strides.
struct BhsdCopy {
  AlignedBuffer storage;
  TensorView view;

  explicit BhsdCopy(const TensorView& t)
      : storage(static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype)), view(t) {
    view.data = storage.data();
    view.stride_b = t.h * t.s * t.d;
    view.stride_h = t.s * t.d;
    view.stride_s = t.d;
    const std::size_t elem = dtype_size(t.dtype);
    for (std::int64_t ib = 0; ib < t.b; ++ib)
      for (std::int64_t is = 0; is < t.s; ++is)
        for (std::int64_t ih = 0; ih < t.h; ++ih)
          std::memcpy(static_cast<char*>(view.data) + (ib * view.stride_b + is * view.stride_s + ih * view.stride_h) * static_cast<std::int64_t>(elem),
                      static_cast<const char*>(t.data) + (ib * t.stride_b + is * t.stride_s + ih * t.stride_h) * static_cast<std::int64_t>(elem),
                      static_cast<std::size_t>(t.d) * elem);
  }
};

// Runs case c on each implementation of `isas` against the double reference.
void check_case(const Case& c, const std::vector<Isa>& isas) {
  Tensor q = testing::random_tensor(c.dtype, c.b, c.sq, c.hq, c.d, 1);
  Tensor k = testing::random_tensor(c.dtype, c.b, c.sk, c.hkv, c.d, 2);
  Tensor v = testing::random_tensor(c.dtype, c.b, c.sk, c.hkv, c.d, 3);
  Tensor dout = testing::random_tensor(c.dtype, c.b, c.sq, c.hq, c.d, 4);
  TensorView qv = q.view(), kv = k.view(), vv = v.view(), dov = dout.view();
  std::vector<std::unique_ptr<BhsdCopy>> strided;
  if (c.bhsd) {
    for (TensorView* t : {&qv, &kv, &vv, &dov}) {
      strided.push_back(std::make_unique<BhsdCopy>(*t));
      *t = strided.back()->view;
    }
  }

  AttentionOptions opt;
  opt.mask = c.mask;
  opt.mask.documents = c.documents;  // the case's own copy outlives the calls
  opt.q_pos = {c.q_ids.empty() ? nullptr : c.q_ids.data(), c.q_offset};
  opt.k_pos = {c.k_ids.empty() ? nullptr : c.k_ids.data(), c.k_offset};
  opt.threads = 2;
  opt.block_m = c.block_m;
  opt.block_n = c.block_n;

  const reference::ForwardResult ref = reference::forward(qv, kv, vv, opt);
  const reference::BackwardResult ref_grad = reference::backward(qv, kv, vv, dov, opt);
  const double fwd_tol = testing::forward_tolerance(c.d, c.sk, ref.max_abs_score);
  const double bwd_tol = testing::backward_tolerance(c.d, c.sk, ref.max_abs_score);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  const testing::GradientFloors floors = testing::gradient_floors(qv, kv, vv, dov, scale);

  for (Isa isa : isas) {
    SCOPED_TRACE("isa " + kernels::isa_name(isa));
    opt.isa = isa;
    std::vector<DType> out_dtypes = {DType::kF32};
    if (c.dtype == DType::kBF16) out_dtypes.push_back(DType::kBF16);
    double e_out = 0.0, e_lse = 0.0;  // of the fp32 output
    for (DType out_dtype : out_dtypes) {
      Tensor out(out_dtype, c.b, c.sq, c.hq, c.d);
      RowStats lse(c.b, c.hq, c.sq);
      out.fill_nan();
      lse.fill_nan();
      kernels::attention_forward(qv, kv, vv, out.view(), lse.view(), opt);
      const double tol = testing::forward_tolerance(c.d, c.sk, ref.max_abs_score, out_dtype);
      const double e = testing::relative_error(out.view(), ref.out), el = testing::lse_error(lse.view(), ref.lse);
      EXPECT_LE(e, tol) << "out " << dtype_name(out_dtype);
      EXPECT_LE(el, fwd_tol) << "lse";
      if (out_dtype == DType::kF32) {
        e_out = e;
        e_lse = el;
      }
    }

    // Backward from the kernel's own fp32 forward, into accumulators holding random values.
    Tensor out(DType::kF32, c.b, c.sq, c.hq, c.d);
    RowStats lse(c.b, c.hq, c.sq), delta(c.b, c.hq, c.sq);
    kernels::attention_forward(qv, kv, vv, out.view(), lse.view(), opt);
    delta.fill_nan();
    kernels::compute_delta(dov, out.view(), delta.view(), opt.threads);
    Tensor dq = testing::random_tensor(DType::kF32, c.b, c.sq, c.hq, c.d, 5, 1e-3);
    Tensor dk = testing::random_tensor(DType::kF32, c.b, c.sk, c.hkv, c.d, 6, 1e-3);
    Tensor dv = testing::random_tensor(DType::kF32, c.b, c.sk, c.hkv, c.d, 7, 1e-3);
    const auto dq0 = testing::to_double(dq.view()), dk0 = testing::to_double(dk.view()),
               dv0 = testing::to_double(dv.view());
    kernels::attention_backward(qv, kv, vv, dov, lse.view(), delta.view(), dq.view(), dk.view(),
                                dv.view(), opt);
    auto plus = [](std::vector<double> a, const std::vector<double>& b) {
      for (std::size_t i = 0; i < a.size(); ++i) a[i] += b[i];
      return a;
    };
    const double e_dq = testing::relative_error(dq.view(), plus(ref_grad.dq, dq0), floors.dq);
    const double e_dk = testing::relative_error(dk.view(), plus(ref_grad.dk, dk0), floors.dk);
    const double e_dv = testing::relative_error(dv.view(), plus(ref_grad.dv, dv0), floors.dv);
    EXPECT_LE(e_dq, bwd_tol) << "dq";
    EXPECT_LE(e_dk, bwd_tol) << "dk";
    EXPECT_LE(e_dv, bwd_tol) << "dv";
    if (std::getenv("BURST_TEST_VERBOSE")) {
      std::printf("%-30s %-16s %s fwd_tol %.1e out %.1e lse %.1e bwd_tol %.1e dq %.1e dk %.1e dv %.1e\n",
                  c.name.c_str(), kernels::isa_name(isa).c_str(), std::string(dtype_name(c.dtype)).c_str(), fwd_tol,
                  e_out, e_lse, bwd_tol, e_dq, e_dk, e_dv);
    }
  }
}

class Sweep : public ::testing::TestWithParam<Case> {};

TEST_P(Sweep, MatchesDoubleReference) { check_case(GetParam(), testing::isas_under_test()); }

INSTANTIATE_TEST_SUITE_P(Catalog, Sweep, ::testing::ValuesIn(catalog()),
                         [](const ::testing::TestParamInfo<Case>& p) { return clean(p.param.name); });

// The fp32 cases of the catalog again with bf16 storage, on the AMX implementations only:
// their packing and tiling see every shape, mask, position set and tile size of the catalog
// (the catalog's own bf16 cases run there too, in Sweep). The reference is computed from the
// same bf16 values, so the tolerances are those of the fp32 cases.
std::vector<Case> catalog_as_bf16() {
  std::vector<Case> out;
  for (Case c : catalog()) {
    if (c.dtype != DType::kF32) continue;
    c.dtype = DType::kBF16;
    out.push_back(std::move(c));
  }
  return out;
}

std::vector<Isa> amx_isas_under_test() {
  std::vector<Isa> out;
  for (Isa isa : testing::isas_under_test()) {
    if (kernels::isa_name(isa).rfind("amx", 0) == 0) out.push_back(isa);
  }
  return out;
}

class AmxSweep : public ::testing::TestWithParam<Case> {};

TEST_P(AmxSweep, MatchesDoubleReference) {
  const std::vector<Isa> isas = amx_isas_under_test();
  if (isas.empty()) GTEST_SKIP() << "no AMX implementation (amxbf16, amxbf16-emulated) on this processor";
  check_case(GetParam(), isas);
}

INSTANTIATE_TEST_SUITE_P(CatalogAsBf16, AmxSweep, ::testing::ValuesIn(catalog_as_bf16()),
                         [](const ::testing::TestParamInfo<Case>& p) { return clean(p.param.name); });

}  // namespace
}  // namespace burst
