// Matching of the in-process backend: every posted send and receive goes to a queue of its
// destination rank; a send and a receive match on (channel, source, tag), first posted first
// (MPI's non-overtaking order). The receiver's buffer is filled by one copy straight from the
// sender's buffer (rendezvous: a send completes when its data has been taken), made by
// whichever side arrives second, outside the lock. A waiter sleeps on its own transfer's
// condition variable, so a completion wakes the two ranks it concerns, not every waiting rank
// (with 64 ranks on two cores, waking all of them on every transfer cost more than the copies).
//
// A rank whose function throws aborts the world: every wait, post and progress call of the
// other ranks then throws a CommError naming that rank and its message at once, instead of
// waiting for its deadline.
#include "burst/local_world.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <sstream>
#include <system_error>
#include <thread>

namespace burst::comm {
namespace {

struct Transfer {
  bool is_send = false;
  std::uint64_t channel = 0;
  int source = 0;       // world rank
  int destination = 0;  // world rank
  int tag = 0;
  const void* send_data = nullptr;
  void* recv_data = nullptr;
  std::size_t bytes = 0;
  bool matched = false;
  bool done = false;
  std::string error;
  std::condition_variable done_cv;  // with LocalWorld::mutex_
};

class LocalWorld {
 public:
  explicit LocalWorld(int size) : sends_(static_cast<std::size_t>(size)), recvs_(static_cast<std::size_t>(size)) {}

  void post(const std::shared_ptr<Transfer>& t) {
    std::unique_lock lock(mutex_);
    throw_if_aborted();
    auto& other = t->is_send ? recvs_[static_cast<std::size_t>(t->destination)]
                             : sends_[static_cast<std::size_t>(t->destination)];
    const auto it = std::find_if(other.begin(), other.end(), [&](const std::shared_ptr<Transfer>& o) {
      return o->channel == t->channel && o->source == t->source && o->tag == t->tag;
    });
    if (it == other.end()) {
      (t->is_send ? sends_ : recvs_)[static_cast<std::size_t>(t->destination)].push_back(t);
      return;
    }
    std::shared_ptr<Transfer> partner = *it;
    other.erase(it);
    t->matched = partner->matched = true;
    lock.unlock();

    Transfer& send = t->is_send ? *t : *partner;
    Transfer& recv = t->is_send ? *partner : *t;
    std::string error;
    if (send.bytes != recv.bytes) {
      std::ostringstream os;
      os << "message size mismatch: rank " << send.source << " sent " << send.bytes
         << " bytes with tag " << send.tag << " but rank " << recv.destination << " expected "
         << recv.bytes;
      error = os.str();
    } else if (send.bytes > 0) {
      std::memcpy(recv.recv_data, send.send_data, send.bytes);
    }
    lock.lock();
    recv.error = error;  // as with MPI, the receiver (which knows what it expected) reports it
    send.done = recv.done = true;
    send.done_cv.notify_all();
    recv.done_cv.notify_all();
  }

  bool wait_until(Transfer& t, Deadline deadline) {
    std::unique_lock lock(mutex_);
    waiting_.push_back(&t);
    const bool finished = t.done_cv.wait_until(lock, deadline, [&] { return t.done || aborted_; });
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), &t));
    if (!t.done) throw_if_aborted();
    return finished;
  }

  // Makes every later wait, post and progress call of every rank throw; the first call names
  // the failing rank (later ones are consequences and are ignored). Returns whether this call
  // was the first.
  bool abort(int rank, const std::string& message) {
    std::lock_guard lock(mutex_);
    if (aborted_) return false;
    abort_message_ = "rank " + std::to_string(rank) + " failed: " + message;
    aborted_ = true;
    for (Transfer* t : waiting_) t->done_cv.notify_all();
    return true;
  }

  // Cheap enough for the kernels' progress hook (called between tiles).
  void check_aborted() {
    if (!aborted_.load(std::memory_order_relaxed)) return;
    std::lock_guard lock(mutex_);
    throw_if_aborted();
  }

  bool is_done(Transfer& t) {
    std::lock_guard lock(mutex_);
    return t.done;
  }

  // Withdraws an unmatched transfer; a matched one is mid-copy and finishes on its own.
  void cancel(const std::shared_ptr<Transfer>& t) {
    std::unique_lock lock(mutex_);
    if (!t->matched) {
      auto& queue = (t->is_send ? sends_ : recvs_)[static_cast<std::size_t>(t->destination)];
      queue.erase(std::remove(queue.begin(), queue.end(), t), queue.end());
      t->done = true;
      return;
    }
    waiting_.push_back(t.get());
    t->done_cv.wait(lock, [&] { return t->done; });
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), t.get()));
  }

  // Channels of communicators created by split: derived from the parent's channel, how many
  // splits the parent has made and the color, identically on every member, without messages.
  static std::uint64_t child_channel(std::uint64_t parent, std::uint64_t split_index, int color) {
    std::uint64_t x = parent * 0x9E3779B97F4A7C15ull ^ (split_index + 1) * 0xBF58476D1CE4E5B9ull ^
                      (static_cast<std::uint64_t>(color) + 7) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    return x & ~std::uint64_t{1};  // even: the odd neighbour is the collective channel
  }

 private:
  // Caller holds mutex_.
  void throw_if_aborted() const {
    if (aborted_) throw CommError(abort_message_);
  }

  std::mutex mutex_;
  std::vector<Transfer*> waiting_;  // transfers some rank is waiting on: abort wakes them
  std::vector<std::deque<std::shared_ptr<Transfer>>> sends_, recvs_;
  std::atomic<bool> aborted_{false};
  std::string abort_message_;  // guarded by mutex_
};

class LocalRequest : public RequestState {
 public:
  LocalRequest(std::shared_ptr<LocalWorld> world, std::shared_ptr<Transfer> t, TransferInfo info)
      : RequestState(info), world_(std::move(world)), t_(std::move(t)) {}

  bool test() override {
    if (!world_->is_done(*t_)) return false;
    if (!t_->error.empty()) throw CommError(info().describe() + ": " + t_->error);
    return true;
  }
  bool wait_until(Deadline deadline) override { return world_->wait_until(*t_, deadline); }
  void cancel() override { world_->cancel(t_); }

 private:
  std::shared_ptr<LocalWorld> world_;
  std::shared_ptr<Transfer> t_;
};

class LocalCommunicator : public Communicator {
 public:
  // A world communicator: every rank on one node unless BURST_RANKS_PER_NODE says otherwise.
  LocalCommunicator(std::shared_ptr<LocalWorld> world, std::vector<int> members, int rank,
                    std::uint64_t channel)
      : Communicator(rank, static_cast<int>(members.size())), world_(std::move(world)),
        members_(std::move(members)), channel_(channel) {
    set_topology(std::vector<int>(members_.size(), 0));
  }

  std::string_view backend() const override { return "local"; }

  // Transfers move on their own here; the hook only lets a computing rank notice that a
  // peer has failed.
  void progress() override { world_->check_aborted(); }
  // Often enough that an idle (emulated) rank notices a failed peer within 10 ms.
  Clock::time_point progress_due() const override { return Clock::now() + std::chrono::milliseconds(10); }

  std::unique_ptr<Communicator> split(int color, int key) override {
    // Everyone learns everyone's (color, key); members of a color sort by (key, rank).
    const int mine[2] = {color, key};
    std::vector<int> all(2 * static_cast<std::size_t>(world_size()));
    all_gather(mine, all.data(), sizeof(mine));
    const std::uint64_t index = splits_++;
    if (color < 0) return nullptr;
    std::vector<int> group;  // ranks of this communicator
    for (int r = 0; r < world_size(); ++r)
      if (all[2 * static_cast<std::size_t>(r)] == color) group.push_back(r);
    std::stable_sort(group.begin(), group.end(), [&](int a, int b) {
      return all[2 * static_cast<std::size_t>(a) + 1] < all[2 * static_cast<std::size_t>(b) + 1];
    });
    std::vector<int> members;
    int new_rank = 0;
    for (std::size_t i = 0; i < group.size(); ++i) {
      members.push_back(members_[static_cast<std::size_t>(group[i])]);
      if (group[i] == rank()) new_rank = static_cast<int>(i);
    }
    auto child = std::make_unique<LocalCommunicator>(world_, std::move(members), new_rank,
                                                     LocalWorld::child_channel(channel_, index, color));
    child->inherit_topology(*this, group);
    child->set_timeout(timeout());
    return child;
  }

 protected:
  std::unique_ptr<RequestState> post_send(const void* data, std::size_t bytes, int peer, int tag,
                                          bool collective, TransferInfo info) override {
    auto t = make_transfer(true, collective, me(), world_rank(peer), tag, bytes);
    t->send_data = data;
    world_->post(t);
    return std::make_unique<LocalRequest>(world_, std::move(t), info);
  }
  std::unique_ptr<RequestState> post_recv(void* data, std::size_t bytes, int peer, int tag,
                                          bool collective, TransferInfo info) override {
    auto t = make_transfer(false, collective, world_rank(peer), me(), tag, bytes);
    t->recv_data = data;
    world_->post(t);
    return std::make_unique<LocalRequest>(world_, std::move(t), info);
  }

 private:
  std::shared_ptr<Transfer> make_transfer(bool is_send, bool collective, int source,
                                          int destination, int tag, std::size_t bytes) const {
    auto t = std::make_shared<Transfer>();
    t->is_send = is_send;
    t->channel = channel_ + (collective ? 1 : 0);
    t->source = source;
    t->destination = destination;
    t->tag = tag;
    t->bytes = bytes;
    return t;
  }
  int me() const { return members_[static_cast<std::size_t>(rank())]; }
  int world_rank(int peer) const { return members_[static_cast<std::size_t>(peer)]; }

  std::shared_ptr<LocalWorld> world_;
  std::vector<int> members_;  // world rank of each rank of this communicator
  std::uint64_t channel_;     // even; channel_ + 1 carries collectives
  std::uint64_t splits_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> single_rank_communicator() {
  return std::make_unique<LocalCommunicator>(std::make_shared<LocalWorld>(1), std::vector<int>{0}, 0, 0);
}

namespace {

// Rethrows `error` with "rank R: " before its message, keeping its kind (and so its exit
// status and Python exception type).
[[noreturn]] void rethrow_for_rank(int rank, const std::exception_ptr& error) {
  // Messages that already start with "rank R " (a deadline's, say) need no second prefix.
  std::string prefix = "rank " + std::to_string(rank) + ": ";
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    if (std::string_view(e.what()).starts_with("rank " + std::to_string(rank) + " ")) prefix.clear();
  } catch (...) {
  }
  try {
    std::rethrow_exception(error);
  } catch (const TimeoutError& e) {
    throw TimeoutError(prefix + e.what());
  } catch (const CommError& e) {
    throw CommError(prefix + e.what());
  } catch (const OutputError& e) {
    throw OutputError(prefix + e.what());
  } catch (const Error& e) {
    throw Error(prefix + e.what());
  } catch (const std::exception& e) {
    throw std::runtime_error(prefix + e.what());
  }
}

}  // namespace

void run_local_ranks(int world_size, const std::function<void(Communicator&)>& fn) {
  BURST_CHECK(world_size >= 1, "ranks: expected >= 1, got ", world_size);
  auto world = std::make_shared<LocalWorld>(world_size);
  std::vector<int> members(static_cast<std::size_t>(world_size));
  for (int r = 0; r < world_size; ++r) members[static_cast<std::size_t>(r)] = r;
  std::vector<std::exception_ptr> errors(static_cast<std::size_t>(world_size));
  std::atomic<int> origin{-1};  // the rank whose failure aborted the world
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(world_size));
  for (int r = 0; r < world_size; ++r) {
    try {
      threads.emplace_back([&, r] {
        try {
          LocalCommunicator comm(world, members, r, 0);
          fn(comm);
        } catch (const std::exception& e) {
          errors[static_cast<std::size_t>(r)] = std::current_exception();
          if (world->abort(r, e.what())) origin = r;
        }
      });
    } catch (const std::system_error& e) {
      // Ranks already started fail at their next communication; none is left running.
      world->abort(r, "its thread could not be started");
      for (auto& t : threads) t.join();
      fail("ranks: could not start the thread of rank ", r, " of ", world_size, " (", e.what(),
           "); the limit on threads or processes (ulimit -u) is too low for ", world_size, " ranks");
    }
  }
  for (auto& t : threads) t.join();
  if (origin >= 0) rethrow_for_rank(origin, errors[static_cast<std::size_t>(origin)]);
}

}  // namespace burst::comm
