// The communicator interface every distributed algorithm talks through. Algorithms see only
// this header: byte transfers that return requests waited on against a deadline, collectives,
// sub-communicators, node topology and traffic accounting. Backends: in-process ranks as
// threads (local_world.h) and MPI (mpi_world.h).
//
// Collectives are built here from the backends' point-to-point transfers (ring all-gather and
// reduce-scatter, pairwise all-to-all), so every backend has the same deadlines, error
// messages and byte accounting; a backend may override one with a native version.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "burst/error.h"

namespace burst::comm {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

// What a transfer is part of: for traffic accounting and error messages.
enum class Op { kPointToPoint, kAllToAll, kAllGather, kReduceScatter, kAllReduce, kBroadcast, kBarrier, kSplit };
constexpr std::size_t kOpCount = 8;
std::string_view op_name(Op op);

// Thrown when communication itself fails (a backend call returns an error, a message has
// the wrong size), as opposed to an Error from the caller's arguments. Callers that map
// errors to their own kinds (the Python module: ValueError or RuntimeError) tell them apart
// by this type.
class CommError : public Error {
 public:
  using Error::Error;
  ErrorKind kind() const noexcept override { return ErrorKind::kCommunication; }
};

// Thrown when a wait passes its deadline; the message names this rank, the peer, the
// operation, the tag and the byte count.
class TimeoutError : public CommError {
 public:
  using CommError::CommError;
};

// Identity of one posted transfer, for messages.
struct TransferInfo {
  int rank = 0;  // this rank, in the communicator it was posted on
  int peer = 0;
  Op op = Op::kPointToPoint;
  int tag = 0;
  std::size_t bytes = 0;
  bool is_send = false;
  std::string describe() const;
};

// Backend side of a request.
class RequestState {
 public:
  explicit RequestState(TransferInfo info) : info_(info) {}
  virtual ~RequestState() = default;
  // True once the transfer completed; throws burst::Error if it failed.
  virtual bool test() = 0;
  // Blocks (without spinning) until completion or the deadline; false on timeout.
  virtual bool wait_until(Deadline deadline) = 0;
  // Withdraws a transfer that has not completed, so its buffer may be freed.
  virtual void cancel() = 0;
  const TransferInfo& info() const { return info_; }

 private:
  TransferInfo info_;
};

// A posted transfer. Destroying an unfinished request cancels it.
class Request {
 public:
  Request() = default;
  explicit Request(std::unique_ptr<RequestState> state) : state_(std::move(state)) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&& other) noexcept;
  ~Request();

  // True once complete (a default-constructed request is complete).
  bool test();
  // Waits for completion; throws TimeoutError (after cancelling) when the deadline passes.
  void wait(Deadline deadline);
  // Waits for completion until `until` at most, without spinning: true once complete (a
  // failed transfer throws), false when `until` passed first (the request stays posted).
  bool wait_until(Deadline until);

 private:
  std::unique_ptr<RequestState> state_;
};

// Waits for every request against one deadline.
void wait_all(std::span<Request> requests, Deadline deadline);

// Bytes moved by this rank, per operation kind and per peer (ranks of the communicator).
class Traffic {
 public:
  explicit Traffic(int world_size = 0);
  void record(Op op, int peer, std::size_t bytes, bool sent);
  void reset();
  std::uint64_t sent(Op op, int peer) const;
  std::uint64_t received(Op op, int peer) const;
  std::uint64_t total_sent(Op op) const;
  std::uint64_t total_received(Op op) const;
  std::uint64_t total_sent() const;
  std::uint64_t total_received() const;

 private:
  std::array<std::vector<std::uint64_t>, kOpCount> sent_, received_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // "local" or "mpi".
  virtual std::string_view backend() const = 0;
  int rank() const { return rank_; }
  int world_size() const { return size_; }

  // Nonblocking transfers of raw bytes. Buffers must stay valid until the request
  // completes. A receive must name the exact byte count the peer sends (a mismatch is an
  // error naming both); tags are >= 0 and < kMaxTag.
  static constexpr int kMaxTag = 1 << 15;
  Request isend(const void* data, std::size_t bytes, int peer, int tag, Op op = Op::kPointToPoint);
  Request irecv(void* data, std::size_t bytes, int peer, int tag, Op op = Op::kPointToPoint);
  template <class T>
  Request isend(std::span<const T> data, int peer, int tag) {
    return isend(data.data(), data.size_bytes(), peer, tag);
  }
  template <class T>
  Request irecv(std::span<T> data, int peer, int tag) {
    return irecv(data.data(), data.size_bytes(), peer, tag);
  }

  // One ring step: sends to `dest` and receives from `source` at once, then waits for both.
  void sendrecv(const void* send, std::size_t send_bytes, int dest, void* recv,
                std::size_t recv_bytes, int source, int tag, Op op = Op::kPointToPoint);

  // Collectives; every rank of the communicator must call them in the same order.
  // Rank r sends bytes [p * n, (p + 1) * n) of `send` to rank p and receives rank p's into
  // bytes [p * n, (p + 1) * n) of `recv` (n = bytes_per_rank).
  virtual void all_to_all(const void* send, void* recv, std::size_t bytes_per_rank);
  // Uneven all-to-all: counts and offsets in bytes, one per rank.
  virtual void all_to_allv(const void* send, std::span<const std::size_t> send_bytes,
                           std::span<const std::size_t> send_offsets, void* recv,
                           std::span<const std::size_t> recv_bytes,
                           std::span<const std::size_t> recv_offsets);
  // recv holds every rank's `bytes_per_rank` bytes, in rank order.
  virtual void all_gather(const void* send, void* recv, std::size_t bytes_per_rank);
  // recv (count values) = sum over ranks of their send[rank * count .. (rank + 1) * count).
  void reduce_scatter_sum(const float* send, float* recv, std::size_t count);
  void reduce_scatter_sum(const double* send, double* recv, std::size_t count);
  // data = sum over ranks of data; every rank gets bitwise the same result.
  void all_reduce_sum(float* data, std::size_t count);
  void all_reduce_sum(double* data, std::size_t count);
  virtual void broadcast(void* data, std::size_t bytes, int root);
  virtual void barrier();

  // Ranks with the same color form a new communicator, ordered by (key, rank); a negative
  // color returns nullptr. Collective over this communicator.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  // Node index of every rank (0-based, in order of each node's first rank). From the
  // backend's view of shared memory, or BURST_RANKS_PER_NODE=L (ranks r with equal r / L
  // share a node) so tests can pretend to have several nodes on one machine.
  const std::vector<int>& node_of_rank() const { return node_of_rank_; }
  int node_count() const;
  // Pretends nodes of `ranks_per_node` consecutive ranks (rank r on node r / L), as
  // BURST_RANKS_PER_NODE does, for a program that takes it as a setting. Call it on every
  // rank alike before splitting or wrapping this communicator: those copy its nodes.
  void set_ranks_per_node(int ranks_per_node);

  Traffic& traffic() { return traffic_; }
  const Traffic& traffic() const { return traffic_; }

  // Time every wait of this communicator allows, BURST_TIMEOUT seconds by default (60).
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  Deadline deadline() const { return Clock::now() + timeout_; }

  // Lets a backend move posted transfers forward while the caller computes (MPI needs the
  // caller's thread for that); a no-op where transfers move on their own.
  virtual void progress() {}
  // The latest time by which progress() should be called again for posted transfers to keep
  // moving on time: soon (kProgressPoll from now) by default, for backends whose transfers
  // move only while the caller is inside them; later where nothing is due before then (the
  // in-process backend: never; a throttled one: when its next held send is due). A caller
  // that idles (an emulated kernel call) sleeps until then instead of polling.
  virtual Clock::time_point progress_due() const { return Clock::now() + kProgressPoll; }
  static constexpr std::chrono::microseconds kProgressPoll{200};

 protected:
  Communicator(int rank, int size);
  // Sets node_of_rank of a world communicator, applying BURST_RANKS_PER_NODE when set.
  void set_topology(std::vector<int> node_of_rank);
  // Sets node_of_rank of a communicator split from `parent`: rank i of this one is rank
  // parent_ranks[i] there, and keeps its node (renumbered from 0 in order of appearance).
  void inherit_topology(const Communicator& parent, const std::vector<int>& parent_ranks);

  // Throws "communicator <backend> does not support <what>": an operation or size this
  // backend cannot do fails loudly, never silently.
  [[noreturn]] void unsupported(std::string_view what) const;

  // Backend transfers. `collective` selects a channel separate from user point-to-point
  // traffic, so collectives never match user messages.
  virtual std::unique_ptr<RequestState> post_send(const void* data, std::size_t bytes, int peer,
                                                  int tag, bool collective, TransferInfo info) = 0;
  virtual std::unique_ptr<RequestState> post_recv(void* data, std::size_t bytes, int peer,
                                                  int tag, bool collective, TransferInfo info) = 0;

 private:
  template <class T>
  void ring_reduce_scatter(const T* send, T* recv, std::size_t count, Op op);
  template <class T>
  void ring_all_reduce(T* data, std::size_t count);
  Request post(bool send, void* data, std::size_t bytes, int peer, int tag, Op op);

  int rank_, size_;
  std::vector<int> node_of_rank_;
  Traffic traffic_;
  std::chrono::milliseconds timeout_;
};

// One named value every rank must hold alike, as people read it ("layout", "zigzag").
struct Setting {
  std::string name, value;
};

// Checks that every rank passes the same settings (same names, same order, same values);
// otherwise throws CommError "ranks disagree: rank R has <name> <value> but rank 0 has
// <value>" on every rank, naming the first setting that differs. `what` prefixes the message
// ("ranks disagree on the inputs: ..."), may be empty. Collective; one 8-byte all-gather when
// the ranks agree.
void check_agreement(Communicator& comm, std::span<const Setting> settings, std::string_view what = {});

// Bytes one rank sends in all_reduce_sum of `count` elements of `element_bytes` over `ranks`
// ranks: a ring reduce-scatter and a ring all-gather of ceil(count / ranks)-element chunks,
// P - 1 steps each. The one formula of it (strategies and the layer use it).
std::uint64_t all_reduce_bytes(std::uint64_t count, std::size_t element_bytes, int ranks);

// Default timeout: BURST_TIMEOUT seconds (a positive number), else 60 s.
std::chrono::milliseconds default_timeout();

}  // namespace burst::comm
