// Long-context inference on thread ranks: prefill, decode steps and chunks against the double
// reference for P = 1..4, every decode strategy, MHA and GQA, fp32 and bf16, windows; bytes
// per token against the formula and independent of the context; a lost rank ends decoding.
#include <gtest/gtest.h>

#include <chrono>

#include "burst/local_world.h"
#include "decode_suite.h"

namespace burst {
namespace {

using algo::DecodeStrategy;
using testing::DecodeCase;

TEST(Decode, PrefillThenStepsMatchTheReference) {
  for (int ranks : {1, 2, 3, 4})
    for (std::int64_t group : {1, 2})
      for (DType dtype : {DType::kF32, DType::kBF16})
        for (std::int64_t window : {std::int64_t{-1}, std::int64_t{20}}) {
          DecodeCase dc;
          dc.group = group;
          dc.dtype = dtype;
          dc.window = window;
          comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_decode_case(c, dc); });
        }
}

TEST(Decode, ChunksPrefilledOntoTheCache) {
  for (int ranks : {2, 3})
    for (algo::Layout layout : {algo::Layout::kContiguous, algo::Layout::kStriped}) {
      DecodeCase dc;
      dc.steps = 4;
      dc.chunk = 7;
      dc.layout = layout;
      dc.group = 2;
      comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_decode_case(c, dc); });
    }
}

TEST(Decode, BaselinesTensorParallelAndRing) {
  for (DecodeStrategy s : {DecodeStrategy::kTensorParallel, DecodeStrategy::kRing})
    for (int ranks : {1, 2, 4})
      for (std::int64_t window : {std::int64_t{-1}, std::int64_t{20}}) {
        DecodeCase dc;
        dc.strategy = s;
        dc.window = window;
        dc.steps = 6;
        comm::run_local_ranks(ranks, [&](comm::Communicator& c) { testing::check_decode_case(c, dc); });
      }
}

TEST(Decode, BytesPerTokenDoNotGrowWithTheContext) {
  for (int ranks : {2, 3, 4}) {
    std::vector<std::uint64_t> short_ctx(static_cast<std::size_t>(ranks)), long_ctx(static_cast<std::size_t>(ranks));
    comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
      short_ctx[static_cast<std::size_t>(c.rank())] = testing::decode_bytes_with_context(c, 4096);
      long_ctx[static_cast<std::size_t>(c.rank())] = testing::decode_bytes_with_context(c, 65536);
    });
    EXPECT_EQ(short_ctx, long_ctx) << ranks << " ranks";
    EXPECT_GT(short_ctx[0], 0u);
  }
}

// A rank that stops answering mid-decode: its peers fail within the deadline, naming it. (The
// partner of the lost rank in the first round of the reduction waits on it directly; the
// others wait on the partner. They get a longer deadline, so on a loaded machine too the
// partner's passes first and its message is the one reported.)
TEST(Decode, ALostRankFailsItsPeersNamingIt) {
  for (int ranks : {2, 4}) {
    const int lost = ranks - 1;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      comm::run_local_ranks(ranks, [&](comm::Communicator& c) {
        c.set_timeout(std::chrono::milliseconds(c.rank() == (lost ^ 1) ? 500 : 3000));
        DecodeCase dc;
        dc.steps = 8;
        dc.leaving_rank = lost;  // its thread ends after the prefill without another word
        testing::check_decode_case(c, dc);
      });
      ADD_FAILURE() << "no error";
    } catch (const comm::CommError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("from rank " + std::to_string(lost)), std::string::npos) << what;
      EXPECT_NE(what.find("deadline"), std::string::npos) << what;
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  }
}

}  // namespace
}  // namespace burst
