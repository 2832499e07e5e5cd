// Moving [b, s, h, d] tensors between sequence shards and head shards over a communicator:
// the all-to-all of Ulysses (and of the Ulysses groups of USP). Internal to algo.
#pragma once

#include <cstdint>
#include <vector>

#include "algo/common.h"
#include "burst/layout.h"

namespace burst::algo {

using comm::Communicator;

// Rows and heads of the exchange: rank r's tokens are rows [offset[r], offset[r] + n[r]) of
// the full sequence in rank order; rank p owns heads [p h/P, (p + 1) h/P).
struct HeadExchange {
  Communicator& comm;
  const detail::Plan& plan;
  std::vector<std::int64_t> offsets;    // first row of each rank's tokens
  std::vector<std::int64_t> positions;  // global position of each row
  std::int64_t n_total = 0;

  HeadExchange(Communicator& c, const detail::Plan& p) : comm(c), plan(p) {
    for (const auto& pos : p.positions) {
      offsets.push_back(n_total);
      positions.insert(positions.end(), pos.begin(), pos.end());
      n_total += static_cast<std::int64_t>(pos.size());
    }
  }
  std::int64_t n(int r) const { return plan.lengths[static_cast<std::size_t>(r)]; }

  // Heads h0 .. h0 + count of a view.
  static TensorView heads(const TensorView& t, std::int64_t h0, std::int64_t count) {
    TensorView s = t;
    s.data = t.at(0, 0, h0);
    s.h = count;
    return s;
  }
  static TensorView rows(const TensorView& t, std::int64_t s0, std::int64_t count) {
    TensorView s = t;
    s.data = t.at(0, s0, 0);
    s.s = count;
    return s;
  }

  // Sequence shard (b, n_r, h, d) -> head shard (b, N, h/P, d) in rank order of rows.
  Tensor to_heads(const TensorView& shard) {
    const int p = comm.world_size();
    const std::int64_t hp = shard.h / p;
    const std::size_t elem = dtype_size(shard.dtype);
    const std::size_t row = static_cast<std::size_t>(shard.b * hp * shard.d) * elem;
    std::vector<std::size_t> sb(static_cast<std::size_t>(p)), so(sb.size()), rb(sb.size()), ro(sb.size());
    std::size_t send_total = 0, recv_total = 0;
    for (int q = 0; q < p; ++q) {
      so[static_cast<std::size_t>(q)] = send_total;
      sb[static_cast<std::size_t>(q)] = row * static_cast<std::size_t>(shard.s);
      send_total += sb[static_cast<std::size_t>(q)];
      ro[static_cast<std::size_t>(q)] = recv_total;
      rb[static_cast<std::size_t>(q)] = row * static_cast<std::size_t>(n(q));
      recv_total += rb[static_cast<std::size_t>(q)];
    }
    AlignedBuffer send(send_total), recv(recv_total);
    for (int q = 0; q < p; ++q) pack_rows(heads(shard, q * hp, hp), send.as<char>() + so[static_cast<std::size_t>(q)]);
    comm.all_to_allv(send.data(), sb, so, recv.data(), rb, ro);
    Tensor out(shard.dtype, shard.b, n_total, hp, shard.d);
    for (int q = 0; q < p; ++q) {
      unpack_rows(recv.as<char>() + ro[static_cast<std::size_t>(q)], rows(out.view(), offsets[static_cast<std::size_t>(q)], n(q)));
    }
    return out;
  }

  // Head shard (b, N, h/P, d) -> sequence shard (b, n_r, h, d), written into `shard`.
  void to_sequence(const TensorView& full, const TensorView& shard) {
    const int p = comm.world_size(), r = comm.rank();
    const std::int64_t hp = full.h;
    const std::size_t row = static_cast<std::size_t>(full.b * hp * full.d) * dtype_size(full.dtype);
    std::vector<std::size_t> sb(static_cast<std::size_t>(p)), so(sb.size()), rb(sb.size()), ro(sb.size());
    std::size_t send_total = 0, recv_total = 0;
    for (int q = 0; q < p; ++q) {
      so[static_cast<std::size_t>(q)] = send_total;
      sb[static_cast<std::size_t>(q)] = row * static_cast<std::size_t>(n(q));
      send_total += sb[static_cast<std::size_t>(q)];
      ro[static_cast<std::size_t>(q)] = recv_total;
      rb[static_cast<std::size_t>(q)] = row * static_cast<std::size_t>(n(r));
      recv_total += rb[static_cast<std::size_t>(q)];
    }
    AlignedBuffer send(send_total), recv(recv_total);
    for (int q = 0; q < p; ++q) {
      pack_rows(rows(full, offsets[static_cast<std::size_t>(q)], n(q)), send.as<char>() + so[static_cast<std::size_t>(q)]);
    }
    comm.all_to_allv(send.data(), sb, so, recv.data(), rb, ro);
    for (int q = 0; q < p; ++q) unpack_rows(recv.as<char>() + ro[static_cast<std::size_t>(q)], heads(shard, q * hp, hp));
  }

  // Row statistics (b, h, n_r) -> (b, h/P, N), and back.
  RowStats stats_to_heads(const RowStatsView& shard) {
    const int p = comm.world_size();
    const std::int64_t hp = shard.h / p;
    std::vector<std::size_t> sb(static_cast<std::size_t>(p)), so(sb.size()), rb(sb.size()), ro(sb.size());
    std::size_t send_total = 0, recv_total = 0;
    for (int q = 0; q < p; ++q) {
      so[static_cast<std::size_t>(q)] = send_total;
      sb[static_cast<std::size_t>(q)] = static_cast<std::size_t>(shard.b * hp * shard.s) * 4;
      send_total += sb[static_cast<std::size_t>(q)];
      ro[static_cast<std::size_t>(q)] = recv_total;
      rb[static_cast<std::size_t>(q)] = static_cast<std::size_t>(shard.b * hp * n(q)) * 4;
      recv_total += rb[static_cast<std::size_t>(q)];
    }
    std::vector<float> send(send_total / 4), recv(recv_total / 4);
    for (int q = 0; q < p; ++q) {
      RowStatsView part = shard;
      part.data = shard.row(0, q * hp);
      part.h = hp;
      pack_stats(part, send.data() + so[static_cast<std::size_t>(q)] / 4);
    }
    comm.all_to_allv(send.data(), sb, so, recv.data(), rb, ro);
    RowStats out(shard.b, hp, n_total);
    for (int q = 0; q < p; ++q) {
      RowStatsView part = out.view();
      part.data = out.view().row(0, 0) + offsets[static_cast<std::size_t>(q)];
      part.s = n(q);
      unpack_stats(recv.data() + ro[static_cast<std::size_t>(q)] / 4, part);
    }
    return out;
  }

  void stats_to_sequence(const RowStatsView& full, const RowStatsView& shard) {
    const int p = comm.world_size(), r = comm.rank();
    const std::int64_t hp = full.h;
    std::vector<std::size_t> sb(static_cast<std::size_t>(p)), so(sb.size()), rb(sb.size()), ro(sb.size());
    std::size_t send_total = 0, recv_total = 0;
    for (int q = 0; q < p; ++q) {
      so[static_cast<std::size_t>(q)] = send_total;
      sb[static_cast<std::size_t>(q)] = static_cast<std::size_t>(full.b * hp * n(q)) * 4;
      send_total += sb[static_cast<std::size_t>(q)];
      ro[static_cast<std::size_t>(q)] = recv_total;
      rb[static_cast<std::size_t>(q)] = static_cast<std::size_t>(full.b * hp * n(r)) * 4;
      recv_total += rb[static_cast<std::size_t>(q)];
    }
    std::vector<float> send(send_total / 4), recv(recv_total / 4);
    for (int q = 0; q < p; ++q) {
      RowStatsView part = full;
      part.data = full.row(0, 0) + offsets[static_cast<std::size_t>(q)];
      part.s = n(q);
      pack_stats(part, send.data() + so[static_cast<std::size_t>(q)] / 4);
    }
    comm.all_to_allv(send.data(), sb, so, recv.data(), rb, ro);
    for (int q = 0; q < p; ++q) {
      RowStatsView part = shard;
      part.data = shard.row(0, q * hp);
      part.h = hp;
      unpack_stats(recv.data() + ro[static_cast<std::size_t>(q)] / 4, part);
    }
  }
};

}  // namespace burst::algo
