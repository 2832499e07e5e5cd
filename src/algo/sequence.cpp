#include "algo/sequence.h"

#include <vector>

#include "burst/layout.h"
#include "burst/tensor.h"

namespace burst::algo::detail {

std::uint64_t total_sent(const comm::Communicator& comm) {
  std::uint64_t sum = 0;
  for (std::size_t op = 0; op < comm::kOpCount; ++op) sum += comm.traffic().total_sent(static_cast<comm::Op>(op));
  return sum;
}

void gather_sequence(comm::Communicator& comm, const TensorView& shard,
                     const std::vector<std::vector<std::int64_t>>& plan, const TensorView& global) {
  const auto ranks = static_cast<std::size_t>(comm.world_size());
  const std::size_t row_bytes = static_cast<std::size_t>(shard.b * shard.d) * sizeof(float);
  std::vector<std::size_t> send_bytes(ranks), send_offsets(ranks, 0), recv_bytes(ranks), recv_offsets(ranks);
  std::size_t total = 0;
  for (std::size_t p = 0; p < ranks; ++p) {
    send_bytes[p] = static_cast<std::size_t>(shard.s) * row_bytes;
    recv_bytes[p] = plan[p].size() * row_bytes;
    recv_offsets[p] = total;
    total += recv_bytes[p];
  }
  AlignedBuffer mine(send_bytes[0]), all(total);
  pack_rows(shard, mine.data());
  // Every peer gets the same block: an all-gather of unequal shards, posted pairwise at once.
  comm.all_to_allv(mine.data(), send_bytes, send_offsets, all.data(), recv_bytes, recv_offsets);
  for (std::size_t p = 0; p < ranks; ++p) {
    const auto n = static_cast<std::int64_t>(plan[p].size());
    copy_from_shard(dense_view(all.as<char>() + recv_offsets[p], DType::kF32, shard.b, n, 1, shard.d), plan[p],
                    global);
  }
}

void reduce_scatter_sequence(comm::Communicator& comm, const TensorView& global,
                             const std::vector<std::vector<std::int64_t>>& plan, const TensorView& shard) {
  const auto ranks = static_cast<std::size_t>(comm.world_size());
  const std::size_t row_bytes = static_cast<std::size_t>(global.b * global.d) * sizeof(float);
  std::vector<std::size_t> send_bytes(ranks), send_offsets(ranks), recv_bytes(ranks), recv_offsets(ranks);
  std::size_t total = 0;
  for (std::size_t p = 0; p < ranks; ++p) {
    send_bytes[p] = plan[p].size() * row_bytes;
    send_offsets[p] = total;
    total += send_bytes[p];
    recv_bytes[p] = static_cast<std::size_t>(shard.s) * row_bytes;
    recv_offsets[p] = p * recv_bytes[p];
  }
  AlignedBuffer out(total), in(recv_bytes[0] * ranks);
  for (std::size_t p = 0; p < ranks; ++p) {
    const auto n = static_cast<std::int64_t>(plan[p].size());
    copy_to_shard(global, plan[p], dense_view(out.as<char>() + send_offsets[p], DType::kF32, global.b, n, 1, global.d));
  }
  comm.all_to_allv(out.data(), send_bytes, send_offsets, in.data(), recv_bytes, recv_offsets);
  const std::size_t count = recv_bytes[0] / sizeof(float);
  std::vector<float> sum(in.as<float>(), in.as<float>() + count);
  for (std::size_t p = 1; p < ranks; ++p) {
    const float* part = in.as<float>() + p * count;
    for (std::size_t i = 0; i < count; ++i) sum[i] += part[i];
  }
  unpack_rows(sum.data(), shard);
}

}  // namespace burst::algo::detail
