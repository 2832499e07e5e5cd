#include "burst/decode.h"

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <limits>

#include "burst/error.h"
#include "burst/layout.h"
#include "core/thread_pool.h"
#include "kernels/decode.h"

namespace burst::algo {
namespace {

using comm::Communicator;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Message tags: the reduction's hand-over, result and rounds (kTagReduce + 2 + bit), the ring.
constexpr int kTagReduce = 100;
constexpr int kTagRing = 1000;

// Dense fp32 (O, lse) partial of C query rows: O [b, C, h, d] then lse [b, h, C] in one buffer,
// so one message carries both.
class Partial {
 public:
  Partial(std::int64_t b, std::int64_t c, std::int64_t h, std::int64_t d)
      : b_(b), c_(c), h_(h), d_(d), buffer_(bytes_of(b, c, h, d)) {}
  static std::size_t bytes_of(std::int64_t b, std::int64_t c, std::int64_t h, std::int64_t d) {
    return static_cast<std::size_t>(b * c * h * (d + 1)) * sizeof(float);
  }
  TensorView out() const { return dense_view(buffer_.data(), DType::kF32, b_, c_, h_, d_); }
  RowStatsView lse() const { return dense_stats(buffer_.as<float>() + b_ * c_ * h_ * d_, b_, h_, c_); }
  void* data() const { return buffer_.data(); }
  std::size_t bytes() const { return buffer_.bytes(); }
  void clear() const { kernels::init_forward_state(out(), lse()); }

 private:
  std::int64_t b_, c_, h_, d_;
  AlignedBuffer buffer_;
};

// View of rows [first, first + n) of a [b, s, h, d] view.
TensorView rows_of(const TensorView& t, std::int64_t first, std::int64_t n) {
  TensorView r = t;
  r.data = t.at(0, first, 0);
  r.s = n;
  return r;
}

// View of heads [first, first + n) of a [b, s, h, d] view.
TensorView heads_of(const TensorView& t, std::int64_t first, std::int64_t n) {
  TensorView r = t;
  r.data = t.at(0, 0, first);
  r.h = n;
  return r;
}

// Attends the queries (positions q_first ..) to keys k, v at `key_positions` into `into`. A
// decode step has a few query rows per kv head: then the few-rows kernel reads each key once
// for all of them, the keys split over the threads (each chunk's partial merged in chunk
// order, so the result does not depend on timing). Chunks of many new tokens take the tiled
// kernel, threaded over rows.
void attend(const TensorView& q, std::int64_t q_first, const TensorView& k, const TensorView& v,
            const std::int64_t* key_positions, const DecodeOptions& o, const Partial& into) {
  kernels::AttentionOptions ko;
  ko.mask.causal = true;
  ko.mask.window_left = o.window_left;
  ko.scale = o.scale;
  ko.isa = o.isa;
  ko.q_pos.offset = q_first;
  constexpr std::int64_t kFewRows = 16;      // query rows per kv head that read keys once
  constexpr std::int64_t kKeysPerChunk = 256;  // below this a thread is not worth waking
  const bool few = q.s * (q.h / k.h) <= kFewRows;
  if (!few) {
    ko.threads = o.threads;
    ko.k_pos.ids = key_positions;
    kernels::attention_forward(q, k, v, into.out(), into.lse(), ko);
    return;
  }
  const std::int64_t chunks = std::max<std::int64_t>(1, std::min<std::int64_t>(o.threads, k.s / kKeysPerChunk));
  if (chunks == 1) {
    ko.k_pos.ids = key_positions;
    kernels::attention_forward_few_rows(q, k, v, into.out(), into.lse(), ko);
    return;
  }
  std::vector<Partial> parts;
  for (std::int64_t c = 0; c < chunks; ++c) parts.emplace_back(q.b, q.s, q.h, q.d);
  ThreadPool::for_this_thread(o.threads).parallel_for(chunks, [&](std::int64_t c, int) {
    const std::int64_t lo = c * k.s / chunks, hi = (c + 1) * k.s / chunks;
    kernels::AttentionOptions mine = ko;
    mine.k_pos.ids = key_positions + lo;
    kernels::attention_forward_few_rows(q, rows_of(k, lo, hi - lo), rows_of(v, lo, hi - lo),
                                        parts[static_cast<std::size_t>(c)].out(), parts[static_cast<std::size_t>(c)].lse(),
                                        mine);
  });
  into.clear();
  for (const Partial& p : parts) kernels::merge_partials(into.out(), into.lse(), p.out(), p.lse(), o.threads);
}

// All-reduce of every rank's partial by recursive doubling: log2 P' rounds (P' the largest
// power of two <= P; the P - P' extra ranks fold into their partners first and get the result
// back last). In each round both partners merge (lower group's partial, higher group's) in
// that order, so every rank ends with bitwise the same (O, lse).
void all_reduce_partials(Communicator& comm, Partial& mine, DecodeStats& stats) {
  const int p = comm.world_size(), r = comm.rank();
  if (p == 1) return;
  const int p2 = std::bit_floor(static_cast<unsigned>(p));
  const int extra = p - p2;
  const Partial other(mine.out().b, mine.out().s, mine.out().h, mine.out().d);
  auto timed_merge = [&](const Partial& low, const Partial& high) {
    const auto t0 = Clock::now();
    kernels::merge_partials(low.out(), low.lse(), high.out(), high.lse());
    stats.compute_seconds += seconds_since(t0);
  };
  auto wait = [&](comm::Request&& request) {
    const auto t0 = Clock::now();
    request.wait(comm.deadline());
    stats.wait_seconds += seconds_since(t0);
  };
  if (r >= p2) {  // an extra rank: hand over, then take the result
    wait(comm.isend(mine.data(), mine.bytes(), r - p2, kTagReduce));
    wait(comm.irecv(mine.data(), mine.bytes(), r - p2, kTagReduce + 1));
    return;
  }
  if (r < extra) {
    wait(comm.irecv(other.data(), other.bytes(), r + p2, kTagReduce));
    timed_merge(mine, other);
  }
  for (int bit = 1; bit < p2; bit <<= 1) {
    const int partner = r ^ bit;
    const auto t0 = Clock::now();
    comm.sendrecv(mine.data(), mine.bytes(), partner, other.data(), other.bytes(), partner, kTagReduce + 2 + bit);
    stats.wait_seconds += seconds_since(t0);
    if (r < partner) {
      timed_merge(mine, other);
    } else {
      timed_merge(other, mine);
      std::memcpy(mine.data(), other.data(), mine.bytes());
    }
  }
  if (r < extra) wait(comm.isend(mine.data(), mine.bytes(), r + p2, kTagReduce + 1));
}

void check_extend_inputs(const KvCache& cache, const TensorView& q, const TensorView& k, const TensorView& v,
                         const TensorView& out, const RowStatsView& lse) {
  BURST_CHECK(q.b == cache.batch() && q.d == cache.head_dim() && q.s >= 1, "q: expected [", cache.batch(),
              ", C >= 1, n_heads_q, ", cache.head_dim(), "], got ", q.shape_string());
  for (auto [t, name] : {std::pair{&k, "k"}, {&v, "v"}}) {
    BURST_CHECK(t->b == q.b && t->s == q.s && t->h == cache.kv_heads() && t->d == q.d, name, ": expected [", q.b,
                ", ", q.s, ", ", cache.kv_heads(), ", ", q.d, "], got ", t->shape_string());
    BURST_CHECK(t->dtype == cache.dtype(), name, ": expected the cache's dtype ", dtype_name(cache.dtype()), ", got ",
                dtype_name(t->dtype));
  }
  BURST_CHECK(q.dtype == cache.dtype(), "q: expected the cache's dtype ", dtype_name(cache.dtype()), ", got ",
              dtype_name(q.dtype));
  BURST_CHECK(q.h % cache.kv_heads() == 0, "q: expected n_heads_q a multiple of the ", cache.kv_heads(),
              " kv heads, got ", q.h);
  BURST_CHECK(out.b == q.b && out.s == q.s && out.h == q.h && out.d == q.d && out.dtype == DType::kF32,
              "out: expected fp32 ", q.shape_string(), ", got ", dtype_name(out.dtype), " ", out.shape_string());
  BURST_CHECK(lse.b == q.b && lse.h == q.h && lse.s == q.s, "lse: expected [", q.b, ", ", q.h, ", ", q.s, "], got [",
              lse.b, ", ", lse.h, ", ", lse.s, "]");
}

}  // namespace

std::string decode_strategy_name(DecodeStrategy s) {
  switch (s) {
    case DecodeStrategy::kBurst: return "burst";
    case DecodeStrategy::kTensorParallel: return "tp";
    case DecodeStrategy::kRing: return "ring";
  }
  return "?";
}

DecodeStrategy parse_decode_strategy(const std::string& text, const std::string& what) {
  for (DecodeStrategy s : {DecodeStrategy::kBurst, DecodeStrategy::kTensorParallel, DecodeStrategy::kRing})
    if (text == decode_strategy_name(s)) return s;
  fail(what, ": expected burst, tp or ring, got '", text, "'");
}

// ---- the cache ----------------------------------------------------------------------------

KvCache::KvCache(Communicator& comm, DecodeStrategy strategy, std::int64_t batch, std::int64_t n_heads_kv,
                 std::int64_t head_dim, DType dtype, std::int64_t capacity)
    : strategy_(strategy), rank_(comm.rank()), world_(comm.world_size()), batch_(batch), kv_heads_(n_heads_kv),
      head_dim_(head_dim), first_head_(0), local_heads_(n_heads_kv), dtype_(dtype),
      per_rank_(static_cast<std::size_t>(comm.world_size()), 0) {
  BURST_CHECK(batch >= 1 && n_heads_kv >= 1 && head_dim >= 1 && head_dim <= kernels::kMaxHeadDim,
              "cache: expected batch, n_heads_kv >= 1 and head_dim in [1, ", kernels::kMaxHeadDim, "], got ", batch, ", ",
              n_heads_kv, ", ", head_dim);
  if (strategy == DecodeStrategy::kTensorParallel) {
    BURST_CHECK(n_heads_kv % world_ == 0, "cache: tensor-parallel decode splits the kv heads over the ranks, so it "
                "needs n_heads_kv divisible by the ", world_, " ranks, got ", n_heads_kv);
    local_heads_ = n_heads_kv / world_;
    first_head_ = rank_ * local_heads_;
  }
  reserve(std::max<std::int64_t>(capacity, 16));
}

void KvCache::reserve(std::int64_t tokens) {
  if (tokens <= capacity_) return;
  const std::int64_t capacity = std::max(tokens, 2 * capacity_);
  Tensor k(dtype_, batch_, capacity, local_heads_, head_dim_), v(dtype_, batch_, capacity, local_heads_, head_dim_);
  const auto row = static_cast<std::size_t>(local_heads_ * head_dim_) * dtype_size(dtype_);
  for (std::int64_t ib = 0; ib < batch_ && local_size() > 0; ++ib) {
    std::memcpy(k.view().at(ib, 0, 0), k_.view().at(ib, 0, 0), row * static_cast<std::size_t>(local_size()));
    std::memcpy(v.view().at(ib, 0, 0), v_.view().at(ib, 0, 0), row * static_cast<std::size_t>(local_size()));
  }
  k_ = std::move(k);
  v_ = std::move(v);
  capacity_ = capacity;
}

TensorView KvCache::keys() const { return rows_of(k_.view(), 0, local_size()); }
TensorView KvCache::values() const { return rows_of(v_.view(), 0, local_size()); }

std::size_t KvCache::bytes() const {
  return 2 * static_cast<std::size_t>(batch_ * local_size() * local_heads_ * head_dim_) * dtype_size(dtype_);
}

int KvCache::next_owner() const {
  return static_cast<int>(std::min_element(per_rank_.begin(), per_rank_.end()) - per_rank_.begin());
}

void KvCache::append(const TensorView& k, const TensorView& v, const std::vector<std::int64_t>& positions,
                     std::int64_t first_head) {
  const auto n = static_cast<std::int64_t>(positions.size());
  BURST_CHECK(k.s == n && v.s == n, "cache append: expected ", n, " rows of k and v, got ", k.s, " and ", v.s);
  BURST_CHECK(first_head_ >= first_head && first_head_ + local_heads_ <= first_head + k.h,
              "cache append: the rows hold heads [", first_head, ", ", first_head + k.h, ") but this rank keeps [",
              first_head_, ", ", first_head_ + local_heads_, ")");
  reserve(local_size() + n);
  const auto row = static_cast<std::size_t>(head_dim_) * dtype_size(dtype_);
  for (std::int64_t ib = 0; ib < batch_; ++ib)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t h = 0; h < local_heads_; ++h) {
        std::memcpy(k_.view().at(ib, local_size() + i, h), k.at(ib, i, first_head_ - first_head + h), row);
        std::memcpy(v_.view().at(ib, local_size() + i, h), v.at(ib, i, first_head_ - first_head + h), row);
      }
  positions_.insert(positions_.end(), positions.begin(), positions.end());
  per_rank_[static_cast<std::size_t>(rank_)] += n;
  size_ = strategy_ == DecodeStrategy::kTensorParallel ? local_size() : size_ + n;
}

void KvCache::count(int rank, std::int64_t tokens) {
  per_rank_[static_cast<std::size_t>(rank)] += tokens;
  size_ += tokens;
}

// ---- prefill and extend -------------------------------------------------------------------

StrategyStats prefill(Communicator& comm, KvCache& cache, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView& out, const RowStatsView& lse, const BurstOptions& options) {
  BURST_CHECK(cache.size() == 0, "prefill: expected an empty cache, it holds ", cache.size(),
              " tokens (extend adds to a filled one)");
  BURST_CHECK(cache.strategy() != DecodeStrategy::kTensorParallel,
              "prefill: a tensor-parallel cache holds every token of its heads; fill it with extend");
  BURST_CHECK(options.mask.causal, "prefill: expected a causal mask (a prompt attends its past), got none");
  BURST_CHECK(k.b == cache.batch() && k.h == cache.kv_heads() && k.d == cache.head_dim() && k.dtype == cache.dtype(),
              "prefill: k ", k.shape_string(), " ", dtype_name(k.dtype), " does not fit the cache of batch ",
              cache.batch(), ", ", cache.kv_heads(), " kv heads, head_dim ", cache.head_dim(), ", ",
              dtype_name(cache.dtype()));
  const StrategyStats stats = burst_forward(comm, q, k, v, out, lse, options);
  const auto plan = options.positions.empty() ? shard_plan(options.seqlen, comm.world_size(), options.layout)
                                              : options.positions;
  cache.append(k, v, plan[static_cast<std::size_t>(comm.rank())], 0);
  for (int r = 0; r < comm.world_size(); ++r)
    if (r != comm.rank()) cache.count(r, static_cast<std::int64_t>(plan[static_cast<std::size_t>(r)].size()));
  return stats;
}

DecodeStats extend(Communicator& comm, KvCache& cache, const TensorView& q, const TensorView& k, const TensorView& v,
                   const TensorView& out, const RowStatsView& lse, const DecodeOptions& o) {
  check_extend_inputs(cache, q, k, v, out, lse);
  DecodeStats stats;
  const std::uint64_t sent_before = comm.traffic().total_sent();
  const std::int64_t first = cache.size(), c = q.s, group = q.h / cache.kv_heads();

  // The new tokens' K/V: token-sharded caches give each to the least-filled rank, tp keeps
  // this rank's heads of all of them.
  if (cache.strategy() == DecodeStrategy::kTensorParallel) {
    std::vector<std::int64_t> positions(static_cast<std::size_t>(c));
    for (std::int64_t i = 0; i < c; ++i) positions[static_cast<std::size_t>(i)] = first + i;
    cache.append(k, v, positions, 0);
  } else {
    for (std::int64_t i = 0; i < c; ++i) {
      const int owner = cache.next_owner();
      if (owner == comm.rank()) {
        cache.append(rows_of(k, i, 1), rows_of(v, i, 1), {first + i}, 0);
      } else {
        cache.count(owner, 1);
      }
    }
  }

  // This rank's partial over the keys it holds: every query head (token-sharded) or its heads.
  const std::int64_t q_heads = cache.local_kv_heads() * group;
  const TensorView my_q = heads_of(q, cache.first_kv_head() * group, q_heads);
  Partial mine(q.b, c, q_heads, q.d);
  const std::vector<std::int64_t>& keys = cache.local_positions();
  const bool visible = !keys.empty() && (o.window_left < 0 || keys.back() >= first - o.window_left);
  auto t0 = Clock::now();
  if (visible) {
    attend(my_q, first, cache.keys(), cache.values(), keys.data(), o, mine);
  } else {
    mine.clear();
    stats.skipped = true;
  }
  stats.compute_seconds += seconds_since(t0);

  switch (cache.strategy()) {
    case DecodeStrategy::kBurst:
      all_reduce_partials(comm, mine, stats);
      break;
    case DecodeStrategy::kTensorParallel: {
      // Every rank's heads, in rank order: [rank][O rows | lse] -> out, lse.
      const int p = comm.world_size();
      AlignedBuffer all(mine.bytes() * static_cast<std::size_t>(p));
      t0 = Clock::now();
      comm.all_gather(mine.data(), all.data(), mine.bytes());
      stats.wait_seconds += seconds_since(t0);
      for (int r = 0; r < p; ++r) {
        Partial part(q.b, c, q_heads, q.d);
        std::memcpy(part.data(), all.as<char>() + static_cast<std::size_t>(r) * mine.bytes(), mine.bytes());
        const TensorView dst = heads_of(out, r * q_heads, q_heads);
        for (std::int64_t ib = 0; ib < q.b; ++ib)
          for (std::int64_t i = 0; i < c; ++i)
            for (std::int64_t h = 0; h < q_heads; ++h) {
              std::memcpy(dst.row<float>(ib, i, h), part.out().row<float>(ib, i, h), static_cast<std::size_t>(q.d) * 4);
              lse.row(ib, r * q_heads + h)[i] = part.lse().row(ib, h)[i];
            }
      }
      stats.bytes_sent = comm.traffic().total_sent() - sent_before;
      return stats;
    }
    case DecodeStrategy::kRing: {
      // The cache moves: each rank's shard (K, V and the positions of its tokens) goes once
      // round the ring, and every rank merges every shard into its own result.
      const int p = comm.world_size(), r = comm.rank();
      const auto row = static_cast<std::size_t>(cache.kv_heads() * q.d) * dtype_size(cache.dtype());
      auto shard_bytes = [&](int owner) {
        const auto n = static_cast<std::size_t>(cache.tokens_per_rank()[static_cast<std::size_t>(owner)]);
        return n * (2 * static_cast<std::size_t>(q.b) * row + sizeof(std::int64_t));
      };
      auto pack = [&](void* dst) {  // [positions][K rows][V rows], dense
        auto* bytes = static_cast<char*>(dst);
        std::memcpy(bytes, keys.data(), keys.size() * sizeof(std::int64_t));
        bytes += keys.size() * sizeof(std::int64_t);
        for (const TensorView& t : {cache.keys(), cache.values()})
          for (std::int64_t ib = 0; ib < q.b; ++ib)
            for (std::size_t i = 0; i < keys.size(); ++i, bytes += row)
              std::memcpy(bytes, t.at(ib, static_cast<std::int64_t>(i), 0), row);
      };
      std::size_t largest = 0;
      for (int owner = 0; owner < p; ++owner) largest = std::max(largest, shard_bytes(owner));
      AlignedBuffer current(largest), next(largest);
      pack(current.data());
      Partial part(q.b, c, q_heads, q.d);
      for (int step = 1; step < p; ++step) {
        const int from = ((r - step) % p + p) % p, held = ((r - step + 1) % p + p) % p;
        t0 = Clock::now();
        comm.sendrecv(current.data(), shard_bytes(held), (r + 1) % p, next.data(), shard_bytes(from), (r - 1 + p) % p,
                      kTagRing);
        stats.wait_seconds += seconds_since(t0);
        std::swap(current, next);
        const auto n = cache.tokens_per_rank()[static_cast<std::size_t>(from)];
        if (n == 0) continue;
        t0 = Clock::now();
        const auto* positions = current.as<std::int64_t>();
        char* rows = current.as<char>() + static_cast<std::size_t>(n) * sizeof(std::int64_t);
        const TensorView kk = dense_view(rows, cache.dtype(), q.b, n, cache.kv_heads(), q.d);
        const TensorView vv = dense_view(rows + static_cast<std::size_t>(q.b * n) * row, cache.dtype(), q.b, n,
                                         cache.kv_heads(), q.d);
        attend(my_q, first, kk, vv, positions, o, part);
        kernels::merge_partials(mine.out(), mine.lse(), part.out(), part.lse(), o.threads);
        stats.compute_seconds += seconds_since(t0);
      }
      break;
    }
  }
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t i = 0; i < c; ++i)
      for (std::int64_t h = 0; h < q.h; ++h)
        std::memcpy(out.row<float>(ib, i, h), mine.out().row<float>(ib, i, h), static_cast<std::size_t>(q.d) * 4);
  for (std::int64_t ib = 0; ib < q.b; ++ib)
    for (std::int64_t h = 0; h < q.h; ++h) std::memcpy(lse.row(ib, h), mine.lse().row(ib, h), static_cast<std::size_t>(c) * 4);
  stats.bytes_sent = comm.traffic().total_sent() - sent_before;
  return stats;
}

std::uint64_t extend_bytes(DecodeStrategy strategy, int world_size, int rank, std::int64_t batch, std::int64_t n_heads_q,
                           std::int64_t n_heads_kv, std::int64_t head_dim, std::int64_t tokens,
                           std::size_t cache_element_bytes, const std::vector<std::int64_t>& cache_tokens_per_rank) {
  const int p = world_size;
  if (p == 1) return 0;
  const auto partial = static_cast<std::uint64_t>(Partial::bytes_of(batch, tokens, n_heads_q, head_dim));
  switch (strategy) {
    case DecodeStrategy::kBurst: {
      const int p2 = std::bit_floor(static_cast<unsigned>(p));
      const auto rounds = static_cast<std::uint64_t>(std::countr_zero(static_cast<unsigned>(p2)));
      if (rank >= p2) return partial;                    // hands its partial over
      return (rounds + (rank < p - p2 ? 1 : 0)) * partial;  // + the result back to its extra rank
    }
    case DecodeStrategy::kTensorParallel:
      return static_cast<std::uint64_t>(p - 1) * (partial / static_cast<std::uint64_t>(p));  // ring all-gather
    case DecodeStrategy::kRing: {
      const auto row = static_cast<std::uint64_t>(n_heads_kv * head_dim) * cache_element_bytes;
      std::uint64_t sent = 0;
      for (int step = 1; step < p; ++step) {
        const int held = ((rank - step + 1) % p + p) % p;
        const auto n = static_cast<std::uint64_t>(cache_tokens_per_rank[static_cast<std::size_t>(held)]);
        sent += n * (2 * static_cast<std::uint64_t>(batch) * row + sizeof(std::int64_t));
      }
      return sent;
    }
  }
  return 0;
}

}  // namespace burst::algo
