// Test support: seeded random tensors, layout position sets, and the written tolerance policy
// of docs/numerics.md, applied against the double-precision reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "burst/attention.h"
#include "reference/compare.h"
#include "reference/reference.h"

namespace burst::testing {

// Normal(0, stddev) values from a seeded generator, stored in `dtype`. Never all zeros.
Tensor random_tensor(DType dtype, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d,
                     std::uint64_t seed, double stddev = 1.0);

// Global positions of rank `rank`'s tokens when `total` tokens are split over `world` ranks.
// Zigzag: 2*world near-equal chunks, rank r holds chunks r and 2*world-1-r.
// Striped: rank r holds tokens r, r + world, r + 2*world, ...
std::vector<std::int64_t> zigzag_positions(std::int64_t total, int world, int rank);
std::vector<std::int64_t> striped_positions(std::int64_t total, int world, int rank);

// The tolerance policy (docs/numerics.md). Errors are normwise relative:
// max |x - ref| / max |ref| over one tensor.
//   forward:  2 u (d (1 + S) + sk)           u = 2^-24, S = max |score|
//   backward: 4 u (d (1 + S) + sk + d)       dP, delta and the dS sums add d-term dot products
// plus 2^-8 for every rounding of the compared tensor to bf16.
double forward_tolerance(std::int64_t d, std::int64_t seqlen_k, double max_abs_score,
                         DType out_dtype = DType::kF32);
double backward_tolerance(std::int64_t d, std::int64_t seqlen_k, double max_abs_score);

// Normwise relative error of `got` against the dense double `ref` ([b, s, h, d]):
// max |got - ref| / max(max |ref|, floor) (reference::NormwiseError): non-finite values must
// sit where the reference has the same ones, else +inf.
double relative_error(const TensorView& got, const std::vector<double>& ref, double floor = 0.0);

// Largest |x| of a tensor.
double max_abs(const TensorView& t);

// Magnitude floors for gradient errors (reference::gradient_floors, docs/numerics.md):
// dS = P (dP - delta) cancels to 0 when a row sees one key, leaving rounding noise.
struct GradientFloors {
  double dq, dk, dv;
};
GradientFloors gradient_floors(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, double scale);
// Largest |lse - ref| / (1 + |ref|); non-finite values must match exactly (else +inf).
double lse_error(const RowStatsView& got, const std::vector<double>& ref);

// Copies a tensor (any strides) into a dense double vector.
std::vector<double> to_double(const TensorView& t);

// True when the two tensors hold bitwise identical values.
bool bitwise_equal(const TensorView& a, const TensorView& b);
bool bitwise_equal(const RowStatsView& a, const RowStatsView& b);

// The instruction-set implementations to test on this host, as names for test output.
std::vector<kernels::Isa> isas_under_test();

}  // namespace burst::testing
