// The error measure of docs/numerics.md ("Error measure"), shared by the tests and the CLI's
// verify path: normwise relative errors against the double reference, non-finite values
// compared by position, and the magnitude floors of the gradients.
#pragma once

#include "burst/tensor.h"

namespace burst::reference {

// Normwise relative error of one tensor, accumulated element by element:
//   max |x - ref| / max(max |ref|, floor)   over the positions where both are finite.
// Non-finite values are compared by position: where both are the same non-finite value (NaN
// and NaN, or the same infinity) the position is left out; where only one is finite, or
// they are different non-finite values, the error is infinite.
class NormwiseError {
 public:
  void add(double got, double want);
  void merge(const NormwiseError& other);
  // With floor 0 and an all-zero (or all non-finite) reference, the largest difference.
  double error(double floor = 0.0) const;

 private:
  double diff_ = 0.0;  // max |x - ref| over finite pairs
  double ref_ = 0.0;   // max |ref| over finite pairs
  bool mismatch_ = false;
};

// Error of one lse value: |lse - ref| / (1 + |ref|) when both are finite, 0 when both are
// the same non-finite value (-inf for a row with no score above -inf, NaN for a row a NaN
// reaches), +inf otherwise.
double lse_error(double got, double want);

// Largest |x| over the finite elements of t (0 if none).
double max_abs_finite(const TensorView& t);

// Magnitude floors of the gradient errors: 2^12 u d (u = 2^-24, d the head dim) times the
// size of one term of the gradient's sum, scale |dO| |V| |K| for dQ and scale |dO| |V| |Q| for
// dK (maxima over the finite elements of the inputs); 0 for dV, whose terms P dO do not cancel
// to a zero sum. u d |dO| |V| bounds the rounding of one d-term dot product dP, which is all
// an exactly zero dQ or dK is made of. Derivation and measurements: docs/numerics.md.
struct GradientFloors {
  double dq, dk, dv;
};
constexpr int kGradientFloorLog2 = 12;  // the floor is 2^12 u d = d 2^-12 terms
GradientFloors gradient_floors(const TensorView& q, const TensorView& k, const TensorView& v,
                               const TensorView& dout, double scale);

}  // namespace burst::reference
