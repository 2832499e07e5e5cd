// Long-context inference checks that run on every rank of a communicator, shared by the
// in-process test (test_decode.cpp) and the MPI one (test_burst_mpi.cpp): prefill, then decode
// steps (or chunks) against the double reference, with the bytes every step sends checked
// exactly against algo::extend_bytes.
#pragma once

#include <cstdint>
#include <string>

#include "burst/communicator.h"
#include "burst/decode.h"

namespace burst::testing {

struct DecodeCase {
  algo::DecodeStrategy strategy = algo::DecodeStrategy::kBurst;
  std::int64_t context = 61;  // prefilled tokens
  std::int64_t steps = 16;
  std::int64_t chunk = 1;      // new tokens per step
  std::int64_t group = 1;      // n_heads_q / n_heads_kv
  std::int64_t window = -1;    // keys a token sees before itself; -1 all
  DType dtype = DType::kF32;
  algo::Layout layout = algo::Layout::kZigzag;
  int leaving_rank = -1;       // a rank that stops after the prefill (failure tests)
  std::string describe() const;
};

void check_decode_case(comm::Communicator& c, const DecodeCase& dc);

// Bytes per token of burst decode do not depend on the context: a cache of `context` tokens
// (filled without attention), three steps, each rank's bytes against the formula. Returns
// this rank's bytes per step.
std::uint64_t decode_bytes_with_context(comm::Communicator& c, std::int64_t context);

}  // namespace burst::testing
