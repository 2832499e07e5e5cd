// The torch.distributed backend: Burst's transfers go through a ProcessGroup's send and recv,
// called through Python (Debian's python3-torch ships no libtorch headers, and torch's own
// pybind11 types would tie this module to torch's build of pybind11; the Python calls cost
// microseconds against transfers of kilobytes and more).
//
// Threads and the GIL: like the MPI backend at MPI_THREAD_FUNNELED, only the rank's own
// thread posts transfers (Burst's kernel workers compute and never communicate). Burst runs
// with the GIL released; a post takes the GIL for the send or recv call only. gloo's Work
// has no completion query (is_completed stays false until wait is called) and a wait with a
// timeout that expires closes the whole gloo context, so every transfer gets a waiter thread
// that calls the untimed wait (torch releases the GIL inside it) and signals a condition
// variable; the rank thread waits on that against Burst's deadline, never holding the GIL.
//
// Buffers: each message is staged in a torch-owned uint8 tensor, a 16-byte header (magic,
// payload length) and the payload. gloo cannot withdraw a posted transfer, so Burst's buffer
// must never be the one gloo writes into or reads from: the staging tensor lives as long as
// the transfer does. The header lets a receiver report a message of the wrong size as MPI
// does (a longer one than posted makes gloo abort the process, which agreement checks before
// every operation rule out). Burst's traffic counters count payload bytes, as for MPI.
//
// Failure: a transfer that fails (a lost peer closes its connections: "Connection closed by
// peer"), a wait past the deadline, or a transfer abandoned unfinished closes the group:
// this rank first lists the peers whose connection is already closed (a send posted to such
// a peer fails at once), then makes gloo close every connection of the group (a 1 ms wait on
// a receive nobody sends, which gloo answers by closing the context, as it does for its own
// timeouts). So the waiter threads return, and peers blocked on this rank fail at once
// instead of at their deadline. The error names the transfer, the peer and the closed
// connections; every later call on the group's Burst communicators fails with it.
#include "torch_group.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

namespace burst::python {
namespace {

namespace py = pybind11;
using comm::Communicator;
using comm::Deadline;
using comm::RequestState;
using comm::TransferInfo;

// Tags on the wire: Burst's tag space (tags below kMaxTag, a collective channel beside the
// point-to-point one) once per communicator context (the group's own, and one per split),
// above 2^30 so the caller's own send/recv on the group (small tags) never meet Burst's.
constexpr int kTagBase = 1 << 30;
constexpr int kContextTags = 2 * Communicator::kMaxTag;
constexpr std::uint64_t kContexts = (std::numeric_limits<int>::max() - kTagBase) / kContextTags;
// Reserved below the base: the probe of closed connections and the receive that closes the group.
constexpr int kProbeTag = kTagBase - 1;
constexpr int kCloseTag = kTagBase - 2;

struct WireHeader {
  std::uint32_t magic = 0;
  std::uint32_t reserved = 0;
  std::uint64_t bytes = 0;
};
static_assert(sizeof(WireHeader) == 16);
constexpr std::uint32_t kMagic = 0x54535242;  // "BRST"

// Waits for a waiter thread after the group was closed, before leaving it detached (a
// backend that ignores the closing; gloo ends every wait at once).
constexpr auto kJoinLimit = std::chrono::seconds(10);

// What the communicators of one group share in this process.
struct GroupState {
  py::object send, recv, empty, uint8, timedelta;
  std::string backend;  // "torch.distributed (gloo)"
  int rank = 0, size = 1;
  std::vector<int> global_ranks;  // of each group rank, in torch's default group
  std::uint64_t next_context = 1;  // above every context this process has used (split)

  std::mutex mutex;  // guards failure and closed_works
  std::string failure;  // set once the group is closed
  std::vector<py::object> closed_works;  // probes and the closing receive, kept alive

  ~GroupState() {
    if (!Py_IsInitialized()) return;  // the interpreter is gone: nothing left to release
    py::gil_scoped_acquire gil;
    send = recv = empty = uint8 = timedelta = py::object();
    closed_works.clear();
  }

  // "rank 3", with its global rank when the group is not the default one.
  std::string name(int group_rank) const {
    std::string s = "rank " + std::to_string(group_rank);
    const int global = global_ranks[static_cast<std::size_t>(group_rank)];
    if (global != group_rank) s += " (global rank " + std::to_string(global) + ")";
    return s;
  }
};

// The end of one transfer, as its waiter thread saw it.
struct Completion {
  std::mutex mutex;
  std::condition_variable done;
  bool finished = false;
  bool ok = false;
  std::string error;
};

std::string seconds_text(std::chrono::milliseconds ms) {
  std::ostringstream os;
  os << static_cast<double>(ms.count()) / 1000.0 << " s";
  return os.str();
}

class GroupCommunicator;

class GroupRequest final : public RequestState {
 public:
  GroupRequest(TransferInfo info, GroupCommunicator* comm, py::object staging, std::uint8_t* wire, void* out,
               py::object work);
  ~GroupRequest() override;

  bool test() override;
  bool wait_until(Deadline deadline) override;
  void cancel() override;

 private:
  void finish();
  void join();

  GroupCommunicator* comm_;
  py::object staging_;  // the wire bytes: header, payload
  std::uint8_t* wire_;
  void* out_;           // the receiver's buffer, filled when the message is complete
  std::shared_ptr<Completion> completion_ = std::make_shared<Completion>();
  std::thread waiter_;
  bool done_ = false;
};

class GroupCommunicator final : public Communicator {
 public:
  // Ranks `members` of the group (this communicator's rank r is group rank members[r]), tags
  // of `context`.
  GroupCommunicator(std::shared_ptr<GroupState> state, std::vector<int> members, std::uint64_t context)
      : Communicator(rank_among(state->rank, members), static_cast<int>(members.size())),
        state_(std::move(state)), members_(std::move(members)), context_(context) {}

  std::string_view backend() const override { return state_->backend; }

  // Ranks on one host form a node (BURST_RANKS_PER_NODE overrides). Collective.
  void discover_topology() {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    std::uint64_t mine = 0xcbf29ce484222325ull;  // FNV-1a of the host name
    for (const char* c = host; *c != '\0'; ++c) mine = (mine ^ static_cast<unsigned char>(*c)) * 0x100000001b3ull;
    std::vector<std::uint64_t> hosts(static_cast<std::size_t>(world_size()));
    exchange(&mine, hosts.data(), sizeof(mine));
    std::vector<int> nodes;
    std::vector<std::uint64_t> seen;
    for (const std::uint64_t h : hosts) {
      auto it = std::find(seen.begin(), seen.end(), h);
      if (it == seen.end()) it = seen.insert(seen.end(), h);
      nodes.push_back(static_cast<int>(it - seen.begin()));
    }
    set_topology(std::move(nodes));
  }

  // A view of the same group: members and their order from the colors and keys every rank
  // passes, and a context of tags no other live communicator of these ranks uses (the
  // largest counter among the ranks, each counter being above every context its rank used).
  std::unique_ptr<Communicator> split(int color, int key) override {
    struct Entry {
      std::int64_t color, key;
      std::uint64_t next_context;
    };
    const Entry mine{color, key, state_->next_context};
    std::vector<Entry> all(static_cast<std::size_t>(world_size()));
    exchange(&mine, all.data(), sizeof(Entry));
    std::uint64_t next = 0;
    for (const Entry& e : all) next = std::max(next, e.next_context);
    state_->next_context = next + 1;
    if (color < 0) return nullptr;
    std::vector<int> parents;
    for (int r = 0; r < world_size(); ++r) {
      if (all[static_cast<std::size_t>(r)].color == color) parents.push_back(r);
    }
    std::stable_sort(parents.begin(), parents.end(), [&](int a, int b) {
      return all[static_cast<std::size_t>(a)].key < all[static_cast<std::size_t>(b)].key;
    });
    std::vector<int> members;
    for (const int r : parents) members.push_back(members_[static_cast<std::size_t>(r)]);
    auto child = std::make_unique<GroupCommunicator>(state_, std::move(members), 1 + (next - 1) % (kContexts - 1));
    child->set_timeout(timeout());
    child->inherit_topology(*this, parents);
    return child;
  }

  // Closes the group after a failure of the transfer `info` and throws CommError (TimeoutError
  // when `timeout`) naming it, what happened and the closed connections.
  [[noreturn]] void fail(const TransferInfo& info, const std::string& what, bool timeout) {
    std::string message = info.describe() + ": " + what;
    {
      std::lock_guard lock(state_->mutex);
      if (!state_->failure.empty()) {
        throw comm::CommError(message + "; the group was closed after an earlier failure: " + state_->failure);
      }
    }
    {
      py::gil_scoped_acquire gil;
      message += "; " + close_group();
    }
    {
      std::lock_guard lock(state_->mutex);
      state_->failure = message;
    }
    if (timeout) throw comm::TimeoutError(message);
    throw comm::CommError(message);
  }

  // Closes the group because the unfinished transfer `info` is withdrawn (an error elsewhere
  // unwinds the call): gloo cannot cancel it. Never throws (called from destructors).
  void abandon(const TransferInfo& info) noexcept {
    try {
      {
        std::lock_guard lock(state_->mutex);
        if (!state_->failure.empty()) return;
      }
      std::string message = info.describe() + ": withdrawn before it completed (torch.distributed cannot cancel a "
                            "transfer, so Burst closed the group)";
      {
        py::gil_scoped_acquire gil;
        message += "; " + close_group();
      }
      std::lock_guard lock(state_->mutex);
      state_->failure = message;
    } catch (...) {  // closing is best effort here; the waits of the transfer still end
    }
  }

  py::object& timedelta() { return state_->timedelta; }
  const GroupState& state() const { return *state_; }

 protected:
  std::unique_ptr<RequestState> post_send(const void* data, std::size_t bytes, int peer, int tag, bool collective,
                                          TransferInfo info) override {
    return post(true, data, nullptr, bytes, peer, tag, collective, info);
  }
  std::unique_ptr<RequestState> post_recv(void* data, std::size_t bytes, int peer, int tag, bool collective,
                                          TransferInfo info) override {
    return post(false, nullptr, data, bytes, peer, tag, collective, info);
  }

 private:
  static int rank_among(int group_rank, const std::vector<int>& members) {
    const auto it = std::find(members.begin(), members.end(), group_rank);
    BURST_CHECK(it != members.end(), "torch group: rank ", group_rank, " is not among the members");
    return static_cast<int>(it - members.begin());
  }

  int wire_tag(int tag, bool collective) const {
    return kTagBase + static_cast<int>(context_) * kContextTags + (collective ? kMaxTag : 0) + tag;
  }

  std::unique_ptr<RequestState> post(bool is_send, const void* data, void* out, std::size_t bytes, int peer, int tag,
                                     bool collective, const TransferInfo& info) {
    std::string refused;
    {
      py::gil_scoped_acquire gil;
      {
        std::lock_guard lock(state_->mutex);
        if (!state_->failure.empty()) {
          throw comm::CommError(info.describe() + ": the group was closed after an earlier failure: " +
                                state_->failure);
        }
      }
      py::object staging = state_->empty(py::int_(bytes + sizeof(WireHeader)), py::arg("dtype") = state_->uint8);
      auto* wire = reinterpret_cast<std::uint8_t*>(staging.attr("data_ptr")().cast<std::uintptr_t>());
      if (is_send) {
        const WireHeader header{kMagic, 0, bytes};
        std::memcpy(wire, &header, sizeof(header));
        if (bytes > 0) std::memcpy(wire + sizeof(header), data, bytes);
      }
      py::list tensors;
      tensors.append(staging);
      try {
        py::object work = (is_send ? state_->send : state_->recv)(tensors, members_[static_cast<std::size_t>(peer)],
                                                                  wire_tag(tag, collective));
        return std::make_unique<GroupRequest>(info, this, std::move(staging), wire, out, std::move(work));
      } catch (py::error_already_set& e) {
        refused = e.what();
      }
    }
    // A backend without point-to-point transfers (or not on CPU tensors) is the caller's
    // choice of group, not a failure of communication.
    for (const char* lacks : {"NotImplementedError", "not supported", "does not support", "must be CUDA"}) {
      if (refused.find(lacks) != std::string::npos) {
        unsupported("point-to-point transfers of CPU tensors (" + refused + ")");
      }
    }
    fail(info, std::string("torch.distributed refused the ") + (is_send ? "send" : "receive") + " (" + refused + ")",
         false);
  }

  // Ring all-gather of `bytes` per rank under Op::kSplit: setting up communicators, apart
  // from the traffic of any operation.
  void exchange(const void* send, void* recv, std::size_t bytes) {
    auto* out = static_cast<char*>(recv);
    std::memcpy(out + static_cast<std::size_t>(rank()) * bytes, send, bytes);
    const int p = world_size(), right = (rank() + 1) % p, left = (rank() - 1 + p) % p;
    for (int s = 0; s + 1 < p; ++s) {
      const auto give = static_cast<std::size_t>((rank() - s + p) % p);
      const auto take = static_cast<std::size_t>((rank() - s - 1 + 2 * p) % p);
      sendrecv(out + give * bytes, bytes, right, out + take * bytes, bytes, left, 0, comm::Op::kSplit);
    }
  }

  // Lists the group ranks whose connection is closed (a send posted to one fails at once),
  // then makes gloo close every connection of the group. Returns the list as a clause of the
  // error message. Needs the GIL.
  std::string close_group() {
    GroupState& s = *state_;
    py::object probe = s.empty(0, py::arg("dtype") = s.uint8);
    std::vector<int> closed;
    std::vector<py::object> works;
    for (int g = 0; g < s.size; ++g) {
      if (g == s.rank) continue;
      py::list tensors;
      tensors.append(probe);
      try {
        works.push_back(s.send(tensors, g, kProbeTag));
      } catch (py::error_already_set&) {
        closed.push_back(g);
      }
    }
    // A timed wait that expires makes gloo close the context: every pending transfer of the
    // group fails at once, here (ending the waiter threads) and at the peers.
    for (int g = 0; g < s.size; ++g) {
      if (g == s.rank || std::find(closed.begin(), closed.end(), g) != closed.end()) continue;
      py::list tensors;
      tensors.append(s.empty(1, py::arg("dtype") = s.uint8));
      try {
        py::object work = s.recv(tensors, g, kCloseTag);
        works.push_back(work);
        work.attr("wait")(s.timedelta(py::arg("milliseconds") = 1));
      } catch (py::error_already_set&) {
      }
      break;
    }
    {
      std::lock_guard lock(s.mutex);
      for (auto& w : works) s.closed_works.push_back(std::move(w));
    }
    if (closed.empty()) {
      return "no connection of the group was closed (the peers are alive; do all ranks make the same calls?)";
    }
    std::string names;
    for (const int g : closed) names += (names.empty() ? "" : ", ") + s.name(g);
    if (closed.size() == 1) {
      return "the connection to " + names + " is closed: it was lost, or closed the group after a failure of its own";
    }
    return "the connections to " + names + " are closed: each was lost, or closed the group after a failure of its "
           "own";
  }

  std::shared_ptr<GroupState> state_;
  std::vector<int> members_;  // group rank of each rank of this communicator
  std::uint64_t context_;
};

GroupRequest::GroupRequest(TransferInfo info, GroupCommunicator* comm, py::object staging, std::uint8_t* wire,
                           void* out, py::object work)
    : RequestState(info), comm_(comm), staging_(std::move(staging)), wire_(wire), out_(out) {
  // Called with the GIL held: the thread takes `work` over and starts once the GIL is free.
  waiter_ = std::thread([c = completion_, work = std::move(work)]() mutable {
    bool ok = false;
    std::string error;
    {
      py::gil_scoped_acquire gil;
      try {
        work.attr("wait")();
        ok = true;
      } catch (py::error_already_set& e) {
        error = e.what();
      } catch (const std::exception& e) {
        error = e.what();
      }
      work = py::object();  // released under the GIL
    }
    {
      std::lock_guard lock(c->mutex);
      c->finished = true;
      c->ok = ok;
      c->error = std::move(error);
    }
    c->done.notify_all();
  });
}

GroupRequest::~GroupRequest() {
  join();
  if (!Py_IsInitialized()) return;
  py::gil_scoped_acquire gil;
  staging_ = py::object();
}

void GroupRequest::join() {
  if (waiter_.joinable()) waiter_.join();
}

bool GroupRequest::test() {
  if (done_) return true;
  {
    std::lock_guard lock(completion_->mutex);
    if (!completion_->finished) return false;
  }
  finish();
  return true;
}

bool GroupRequest::wait_until(Deadline deadline) {
  if (done_) return true;
  bool finished = false;
  {
    // The waiter thread needs the GIL to finish: never hold it while waiting for it.
    std::optional<py::gil_scoped_release> unlocked;
    if (PyGILState_Check()) unlocked.emplace();
    std::unique_lock lock(completion_->mutex);
    finished = completion_->done.wait_until(lock, deadline, [&] { return completion_->finished; });
  }
  if (!finished) {
    comm_->fail(info(), "no progress before the deadline (BURST_TIMEOUT, " + seconds_text(comm_->timeout()) + ")",
                true);
  }
  finish();
  return true;
}

void GroupRequest::cancel() {
  if (done_) return;
  done_ = true;
  bool finished = false;
  {
    std::lock_guard lock(completion_->mutex);
    finished = completion_->finished;
  }
  if (!finished) comm_->abandon(info());
  std::optional<py::gil_scoped_release> unlocked;
  if (PyGILState_Check()) unlocked.emplace();
  std::unique_lock lock(completion_->mutex);
  if (completion_->done.wait_for(lock, kJoinLimit, [&] { return completion_->finished; })) {
    lock.unlock();
    join();
  } else {
    waiter_.detach();  // it holds only what it shares with nobody but this request's completion
  }
}

// The transfer ended: report its failure, or check and deliver a received message.
void GroupRequest::finish() {
  join();
  done_ = true;
  if (!completion_->ok) comm_->fail(info(), "the transfer failed (" + completion_->error + ")", false);
  if (info().is_send) return;
  WireHeader header;
  std::memcpy(&header, wire_, sizeof(header));
  if (header.magic != kMagic) {
    throw comm::CommError(info().describe() + ": the message is not Burst's (a message of the caller's on Burst's "
                                              "tags, which are 2^30 and above?)");
  }
  if (header.bytes != info().bytes) {
    throw comm::CommError(info().describe() + ": message size mismatch: rank " + std::to_string(info().peer) +
                          " sent " + std::to_string(header.bytes) + " bytes");
  }
  if (header.bytes > 0) std::memcpy(out_, wire_ + sizeof(header), header.bytes);
}

}  // namespace

std::unique_ptr<comm::Communicator> process_group_communicator(const py::object& group, std::vector<int> global_ranks) {
  auto state = std::make_shared<GroupState>();
  state->rank = group.attr("rank")().cast<int>();
  state->size = group.attr("size")().cast<int>();
  BURST_CHECK(global_ranks.size() == static_cast<std::size_t>(state->size), "global_ranks: expected ", state->size,
              " ranks, got ", global_ranks.size());
  state->global_ranks = std::move(global_ranks);
  state->send = group.attr("send");
  state->recv = group.attr("recv");
  const py::module_ torch = py::module_::import("torch");
  state->empty = torch.attr("empty");
  state->uint8 = torch.attr("uint8");
  state->timedelta = py::module_::import("datetime").attr("timedelta");
  std::string name = "torch.distributed";
  try {
    const py::object backend = py::module_::import("torch.distributed").attr("get_backend")(group);
    name += " (" + py::str(backend).cast<std::string>() + ")";
  } catch (py::error_already_set&) {  // a group torch.distributed does not know: no backend name
  }
  state->backend = name;
  std::vector<int> members(static_cast<std::size_t>(state->size));
  for (int r = 0; r < state->size; ++r) members[static_cast<std::size_t>(r)] = r;
  auto c = std::make_unique<GroupCommunicator>(state, std::move(members), 0);
  {
    py::gil_scoped_release unlocked;
    c->discover_topology();
  }
  return c;
}

}  // namespace burst::python
