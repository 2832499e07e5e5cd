#include "burst/communicator.h"

#include <algorithm>
#include <numeric>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace burst::comm {

std::string_view op_name(Op op) {
  switch (op) {
    case Op::kPointToPoint: return "point-to-point";
    case Op::kAllToAll: return "all-to-all";
    case Op::kAllGather: return "all-gather";
    case Op::kReduceScatter: return "reduce-scatter";
    case Op::kAllReduce: return "all-reduce";
    case Op::kBroadcast: return "broadcast";
    case Op::kBarrier: return "barrier";
    case Op::kSplit: return "split";
  }
  return "?";
}

std::string TransferInfo::describe() const {
  std::ostringstream os;
  os << "rank " << rank << " " << (is_send ? "sending " : "receiving ") << bytes << " bytes "
     << (is_send ? "to" : "from") << " rank " << peer << " (" << op_name(op) << ", tag " << tag << ")";
  return os.str();
}

std::chrono::milliseconds default_timeout() {
  if (const char* env = std::getenv("BURST_TIMEOUT"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const double seconds = std::strtod(env, &end);
    // Below a millisecond every wait would time out; past 1e9 s the deadline overflows.
    BURST_CHECK(end != env && *end == '\0' && seconds >= 1e-3 && seconds <= 1e9,
                "BURST_TIMEOUT: expected a number of seconds from 0.001 to 1e9, got '", env, "'");
    return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
  }
  return std::chrono::seconds(60);
}

// ---- requests ---------------------------------------------------------------------------

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    if (state_) state_->cancel();
    state_ = std::move(other.state_);
  }
  return *this;
}

Request::~Request() {
  if (state_) state_->cancel();
}

bool Request::test() {
  if (!state_) return true;
  if (!state_->test()) return false;
  state_.reset();
  return true;
}

void Request::wait(Deadline deadline) {
  if (!state_) return;
  if (!state_->wait_until(deadline)) {
    const TransferInfo info = state_->info();
    state_->cancel();
    state_.reset();
    throw TimeoutError(info.describe() + ": no progress before the deadline (BURST_TIMEOUT)");
  }
  state_->test();  // surfaces a transfer error (such as a size mismatch)
  state_.reset();
}

bool Request::wait_until(Deadline until) {
  if (!state_) return true;
  if (!state_->wait_until(until)) return false;
  state_->test();  // surfaces a transfer error (such as a size mismatch)
  state_.reset();
  return true;
}

void wait_all(std::span<Request> requests, Deadline deadline) {
  for (Request& r : requests) r.wait(deadline);
}

// ---- traffic ----------------------------------------------------------------------------

Traffic::Traffic(int world_size) {
  for (auto& v : sent_) v.assign(static_cast<std::size_t>(world_size), 0);
  for (auto& v : received_) v.assign(static_cast<std::size_t>(world_size), 0);
}

void Traffic::record(Op op, int peer, std::size_t bytes, bool sent) {
  auto& table = sent ? sent_ : received_;
  table[static_cast<std::size_t>(op)][static_cast<std::size_t>(peer)] += bytes;
}

void Traffic::reset() {
  for (auto& v : sent_) std::fill(v.begin(), v.end(), 0);
  for (auto& v : received_) std::fill(v.begin(), v.end(), 0);
}

std::uint64_t Traffic::sent(Op op, int peer) const {
  return sent_[static_cast<std::size_t>(op)][static_cast<std::size_t>(peer)];
}
std::uint64_t Traffic::received(Op op, int peer) const {
  return received_[static_cast<std::size_t>(op)][static_cast<std::size_t>(peer)];
}
std::uint64_t Traffic::total_sent(Op op) const {
  const auto& v = sent_[static_cast<std::size_t>(op)];
  return std::accumulate(v.begin(), v.end(), std::uint64_t{0});
}
std::uint64_t Traffic::total_received(Op op) const {
  const auto& v = received_[static_cast<std::size_t>(op)];
  return std::accumulate(v.begin(), v.end(), std::uint64_t{0});
}
std::uint64_t Traffic::total_sent() const {
  std::uint64_t n = 0;
  for (std::size_t op = 0; op < kOpCount; ++op) n += total_sent(static_cast<Op>(op));
  return n;
}
std::uint64_t Traffic::total_received() const {
  std::uint64_t n = 0;
  for (std::size_t op = 0; op < kOpCount; ++op) n += total_received(static_cast<Op>(op));
  return n;
}

// ---- communicator -----------------------------------------------------------------------

Communicator::Communicator(int rank, int size)
    : rank_(rank), size_(size), node_of_rank_(static_cast<std::size_t>(size), 0), traffic_(size),
      timeout_(default_timeout()) {}

void Communicator::set_topology(std::vector<int> node_of_rank) {
  if (const char* env = std::getenv("BURST_RANKS_PER_NODE"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    const long per_node = std::strtol(env, &end, 10);
    BURST_CHECK(end != env && *end == '\0' && per_node >= 1,
                "BURST_RANKS_PER_NODE: expected a positive integer, got '", env, "'");
    for (int r = 0; r < size_; ++r) node_of_rank[static_cast<std::size_t>(r)] = r / static_cast<int>(per_node);
  }
  BURST_CHECK(static_cast<int>(node_of_rank.size()) == size_, "topology: expected ", size_,
              " node indices, got ", node_of_rank.size());
  node_of_rank_ = std::move(node_of_rank);
}

void Communicator::set_ranks_per_node(int ranks_per_node) {
  BURST_CHECK(ranks_per_node >= 1, "ranks_per_node: expected a positive integer, got ", ranks_per_node);
  for (int r = 0; r < size_; ++r) node_of_rank_[static_cast<std::size_t>(r)] = r / ranks_per_node;
}

void Communicator::inherit_topology(const Communicator& parent, const std::vector<int>& parent_ranks) {
  BURST_CHECK(static_cast<int>(parent_ranks.size()) == size_, "topology: expected ", size_,
              " parent ranks, got ", parent_ranks.size());
  std::vector<int> nodes, seen;
  for (int pr : parent_ranks) {
    const int node = parent.node_of_rank()[static_cast<std::size_t>(pr)];
    auto it = std::find(seen.begin(), seen.end(), node);
    if (it == seen.end()) it = seen.insert(seen.end(), node);
    nodes.push_back(static_cast<int>(it - seen.begin()));
  }
  node_of_rank_ = std::move(nodes);
}

void Communicator::unsupported(std::string_view what) const {
  fail("communicator ", backend(), " does not support ", what);
}

int Communicator::node_count() const {
  return node_of_rank_.empty() ? 0 : *std::max_element(node_of_rank_.begin(), node_of_rank_.end()) + 1;
}

Request Communicator::post(bool send, void* data, std::size_t bytes, int peer, int tag, Op op) {
  BURST_CHECK(peer >= 0 && peer < size_, send ? "isend" : "irecv", ": peer must be in [0, ",
              size_, "), got ", peer);
  BURST_CHECK(tag >= 0 && tag < kMaxTag, send ? "isend" : "irecv", ": tag must be in [0, ",
              kMaxTag, "), got ", tag);
  BURST_CHECK(data != nullptr || bytes == 0, send ? "isend" : "irecv",
              ": null buffer for ", bytes, " bytes");
  const TransferInfo info{rank_, peer, op, tag, bytes, send};
  const bool collective = op != Op::kPointToPoint;
  traffic_.record(op, peer, bytes, send);
  return Request(send ? post_send(data, bytes, peer, tag, collective, info)
                      : post_recv(data, bytes, peer, tag, collective, info));
}

Request Communicator::isend(const void* data, std::size_t bytes, int peer, int tag, Op op) {
  return post(true, const_cast<void*>(data), bytes, peer, tag, op);
}

Request Communicator::irecv(void* data, std::size_t bytes, int peer, int tag, Op op) {
  return post(false, data, bytes, peer, tag, op);
}

void Communicator::sendrecv(const void* send, std::size_t send_bytes, int dest, void* recv,
                            std::size_t recv_bytes, int source, int tag, Op op) {
  Request requests[2] = {irecv(recv, recv_bytes, source, tag, op), isend(send, send_bytes, dest, tag, op)};
  wait_all(requests, deadline());
}

// Collective tags: the operation, so a stray message names what it belonged to.
namespace {
int tag_of(Op op) { return static_cast<int>(op); }
}  // namespace

void Communicator::all_to_allv(const void* send, std::span<const std::size_t> send_bytes,
                               std::span<const std::size_t> send_offsets, void* recv,
                               std::span<const std::size_t> recv_bytes,
                               std::span<const std::size_t> recv_offsets) {
  const auto n = static_cast<std::size_t>(size_);
  BURST_CHECK(send_bytes.size() == n && send_offsets.size() == n && recv_bytes.size() == n &&
                  recv_offsets.size() == n,
              "all_to_allv: expected ", n, " counts and offsets per side, got ", send_bytes.size(),
              ", ", send_offsets.size(), ", ", recv_bytes.size(), ", ", recv_offsets.size());
  const auto* src = static_cast<const char*>(send);
  auto* dst = static_cast<char*>(recv);
  const auto self = static_cast<std::size_t>(rank_);
  BURST_CHECK(send_bytes[self] == recv_bytes[self], "all_to_allv: rank ", rank_, " sends itself ",
              send_bytes[self], " bytes but expects ", recv_bytes[self]);
  if (send_bytes[self] > 0) std::memmove(dst + recv_offsets[self], src + send_offsets[self], send_bytes[self]);
  // Pairwise: at step s exchange with rank + s and rank - s; everything is posted at once.
  std::vector<Request> requests;
  requests.reserve(2 * n);
  for (int s = 1; s < size_; ++s) {
    const int from = (rank_ - s + size_) % size_;
    const auto f = static_cast<std::size_t>(from);
    requests.push_back(irecv(dst + recv_offsets[f], recv_bytes[f], from, tag_of(Op::kAllToAll), Op::kAllToAll));
  }
  for (int s = 1; s < size_; ++s) {
    const int to = (rank_ + s) % size_;
    const auto t = static_cast<std::size_t>(to);
    requests.push_back(isend(src + send_offsets[t], send_bytes[t], to, tag_of(Op::kAllToAll), Op::kAllToAll));
  }
  wait_all(requests, deadline());
}

void Communicator::all_to_all(const void* send, void* recv, std::size_t bytes_per_rank) {
  const auto n = static_cast<std::size_t>(size_);
  std::vector<std::size_t> counts(n, bytes_per_rank), offsets(n);
  for (std::size_t p = 0; p < n; ++p) offsets[p] = p * bytes_per_rank;
  all_to_allv(send, counts, offsets, recv, counts, offsets);
}

// Ring all-gather: at step s rank r forwards the block of rank (r - s) to r + 1 and receives
// the block of rank (r - s - 1) from r - 1; P - 1 steps.
void Communicator::all_gather(const void* send, void* recv, std::size_t bytes_per_rank) {
  auto* out = static_cast<char*>(recv);
  if (bytes_per_rank > 0) std::memmove(out + static_cast<std::size_t>(rank_) * bytes_per_rank, send, bytes_per_rank);
  const int right = (rank_ + 1) % size_, left = (rank_ - 1 + size_) % size_;
  for (int s = 0; s + 1 < size_; ++s) {
    const auto give = static_cast<std::size_t>((rank_ - s + size_) % size_);
    const auto take = static_cast<std::size_t>((rank_ - s - 1 + 2 * size_) % size_);
    sendrecv(out + give * bytes_per_rank, bytes_per_rank, right, out + take * bytes_per_rank,
             bytes_per_rank, left, tag_of(Op::kAllGather), Op::kAllGather);
  }
}

// Ring reduce-scatter: at step s rank r sends its running sum of chunk (r - s - 1) to r + 1
// and adds its own values to the running sum of chunk (r - s - 2) received from r - 1. After
// P - 1 steps rank r holds chunk r, summed in the fixed order r + 1, r + 2, ..., r.
template <class T>
void Communicator::ring_reduce_scatter(const T* send, T* recv, std::size_t count, Op op) {
  const std::size_t bytes = count * sizeof(T);
  if (size_ == 1) {
    if (bytes > 0) std::memmove(recv, send, bytes);
    return;
  }
  const int right = (rank_ + 1) % size_, left = (rank_ - 1 + size_) % size_;
  std::vector<T> outgoing(send + static_cast<std::size_t>((rank_ - 1 + size_) % size_) * count,
                          send + static_cast<std::size_t>((rank_ - 1 + size_) % size_ + 1) * count);
  std::vector<T> incoming(count);
  for (int s = 0; s + 1 < size_; ++s) {
    const auto chunk = static_cast<std::size_t>((rank_ - s - 2 + 2 * size_) % size_);
    sendrecv(outgoing.data(), bytes, right, incoming.data(), bytes, left, tag_of(op), op);
    const T* own = send + chunk * count;
    for (std::size_t i = 0; i < count; ++i) outgoing[i] = incoming[i] + own[i];
  }
  if (bytes > 0) std::memcpy(recv, outgoing.data(), bytes);
}

// All-reduce = reduce-scatter of near-equal chunks + all-gather of the sums, so every rank
// ends with the same bits. Counts not divisible by P are padded with zeros.
template <class T>
void Communicator::ring_all_reduce(T* data, std::size_t count) {
  if (size_ == 1 || count == 0) return;
  const auto p = static_cast<std::size_t>(size_);
  const std::size_t chunk = (count + p - 1) / p;
  std::vector<T> padded(chunk * p, T{0});
  std::copy(data, data + count, padded.begin());
  std::vector<T> mine(chunk);
  ring_reduce_scatter(padded.data(), mine.data(), chunk, Op::kAllReduce);
  std::vector<T> all(chunk * p);
  const int right = (rank_ + 1) % size_, left = (rank_ - 1 + size_) % size_;
  const std::size_t bytes = chunk * sizeof(T);
  std::memcpy(all.data() + static_cast<std::size_t>(rank_) * chunk, mine.data(), bytes);
  for (int s = 0; s + 1 < size_; ++s) {
    const auto give = static_cast<std::size_t>((rank_ - s + size_) % size_);
    const auto take = static_cast<std::size_t>((rank_ - s - 1 + 2 * size_) % size_);
    sendrecv(all.data() + give * chunk, bytes, right, all.data() + take * chunk, bytes, left,
             tag_of(Op::kAllReduce), Op::kAllReduce);
  }
  std::copy(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(count), data);
}

std::uint64_t all_reduce_bytes(std::uint64_t count, std::size_t element_bytes, int ranks) {
  if (ranks <= 1 || count == 0) return 0;
  const auto p = static_cast<std::uint64_t>(ranks);
  return 2 * (p - 1) * ((count + p - 1) / p) * element_bytes;
}

void Communicator::reduce_scatter_sum(const float* send, float* recv, std::size_t count) {
  ring_reduce_scatter(send, recv, count, Op::kReduceScatter);
}
void Communicator::reduce_scatter_sum(const double* send, double* recv, std::size_t count) {
  ring_reduce_scatter(send, recv, count, Op::kReduceScatter);
}
void Communicator::all_reduce_sum(float* data, std::size_t count) { ring_all_reduce(data, count); }
void Communicator::all_reduce_sum(double* data, std::size_t count) { ring_all_reduce(data, count); }

// Binomial tree rooted at `root`: log2(P) rounds.
void Communicator::broadcast(void* data, std::size_t bytes, int root) {
  BURST_CHECK(root >= 0 && root < size_, "broadcast: root must be in [0, ", size_, "), got ", root);
  const int me = (rank_ - root + size_) % size_;  // rank relative to the root
  int mask = 1;
  while (mask < size_) {
    if (me & mask) {
      Request r = irecv(data, bytes, (me - mask + root) % size_, tag_of(Op::kBroadcast), Op::kBroadcast);
      r.wait(deadline());
      break;
    }
    mask <<= 1;
  }
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (me + mask < size_) {
      Request r = isend(data, bytes, (me + mask + root) % size_, tag_of(Op::kBroadcast), Op::kBroadcast);
      r.wait(deadline());
    }
  }
}

// Dissemination barrier: ceil(log2 P) rounds of empty messages.
void Communicator::barrier() {
  char token = 0;
  for (int dist = 1; dist < size_; dist <<= 1) {
    sendrecv(&token, 0, (rank_ + dist) % size_, &token, 0, (rank_ - dist + size_) % size_,
             tag_of(Op::kBarrier), Op::kBarrier);
  }
}

}  // namespace burst::comm

namespace burst::comm {

namespace {

// Settings as one text: name, unit separator, value, record separator.
std::string settings_text(std::span<const Setting> settings) {
  std::string text;
  for (const Setting& s : settings) text.append(s.name).append(1, '\x1f').append(s.value).append(1, '\x1e');
  return text;
}

std::vector<Setting> parse_settings(std::string_view text) {
  std::vector<Setting> out;
  while (!text.empty()) {
    const auto unit = text.find('\x1f'), record = text.find('\x1e');
    if (unit == std::string_view::npos || record == std::string_view::npos || unit > record) break;
    out.push_back({std::string(text.substr(0, unit)), std::string(text.substr(unit + 1, record - unit - 1))});
    text.remove_prefix(record + 1);
  }
  return out;
}

std::uint64_t fnv1a(std::string_view text) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
  return h;
}

}  // namespace

void check_agreement(Communicator& comm, std::span<const Setting> settings, std::string_view what) {
  const std::string mine = settings_text(settings);
  const std::uint64_t hash = fnv1a(mine);
  std::vector<std::uint64_t> hashes(static_cast<std::size_t>(comm.world_size()));
  comm.all_gather(&hash, hashes.data(), sizeof(hash));
  if (std::all_of(hashes.begin(), hashes.end(), [&](std::uint64_t h) { return h == hashes[0]; })) return;
  // Someone differs: every rank learns every rank's settings and names the same difference.
  const std::uint64_t length = mine.size();
  std::vector<std::uint64_t> lengths(hashes.size());
  comm.all_gather(&length, lengths.data(), sizeof(length));
  const std::uint64_t longest = *std::max_element(lengths.begin(), lengths.end());
  std::string padded = mine;
  padded.resize(longest, '\0');
  std::string all(longest * hashes.size(), '\0');
  comm.all_gather(padded.data(), all.data(), longest);
  auto of_rank = [&](int r) {
    const auto at = static_cast<std::size_t>(r) * longest;
    return parse_settings(std::string_view(all).substr(at, lengths[static_cast<std::size_t>(r)]));
  };
  const std::vector<Setting> first = of_rank(0);
  const std::string prefix = what.empty() ? std::string("ranks disagree: ") : "ranks disagree on " + std::string(what) + ": ";
  for (int r = 1; r < comm.world_size(); ++r) {
    const std::vector<Setting> other = of_rank(r);
    for (std::size_t i = 0; i < std::max(first.size(), other.size()); ++i) {
      if (i >= first.size() || i >= other.size() || first[i].name != other[i].name) {
        throw CommError(prefix + "rank " + std::to_string(r) + " checks " +
                        (i < other.size() ? other[i].name : std::string("nothing")) + " where rank 0 checks " +
                        (i < first.size() ? first[i].name : std::string("nothing")) + " (different versions?)");
      }
      if (first[i].value != other[i].value) {
        throw CommError(prefix + "rank " + std::to_string(r) + " has " + other[i].name + " " + other[i].value +
                        " but rank 0 has " + first[i].value);
      }
    }
  }
}

}  // namespace burst::comm
