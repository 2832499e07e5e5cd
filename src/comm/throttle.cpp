#include "burst/throttle.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <numeric>
#include <string>
#include <thread>

#include "burst/error.h"

namespace burst::comm {
namespace {

double env_number(const char* name) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return 0;
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  BURST_CHECK(end != text && *end == '\0' && value >= 0, name, ": expected a non-negative number, got '", text, "'");
  return value;
}

}  // namespace

class Fabric {
 public:
  Fabric(int nodes, int nics_per_node)
      : nics_(nics_per_node), up_(static_cast<std::size_t>(nodes * nics_per_node)), down_(up_.size()) {}
  int nics_per_node() const { return nics_; }
  // A send of `busy` from NIC `from` to NIC `to` (fabric-wide indices), as through a switch
  // with a queue per output port: it leaves on `from`'s up link when that has sent what was
  // posted before it, and goes down `to`'s link in the first gap, from the time it leaves,
  // that the sends already booked there leave free. So a busy receiver delays this send only,
  // not the sender's next one, and a send booked early for a late slot (senders post all of
  // an all-to-all's sends at once) does not hold back one that reaches the switch before it.
  // Returns when the send has arrived.
  Clock::time_point reserve(int from, int to, Clock::duration busy) {
    std::lock_guard lock(mutex_);
    BURST_CHECK(from >= 0 && to >= 0 && static_cast<std::size_t>(std::max(from, to)) < up_.size(), "fabric: NIC ",
                std::max(from, to), " outside the fabric's ", up_.size(), " NICs");
    const auto now = Clock::now();
    Clock::time_point& up = up_[static_cast<std::size_t>(from)];
    const auto leave = std::max(now, up);
    up = leave + busy;
    return book(down_[static_cast<std::size_t>(to)], leave, busy, now);
  }

 private:
  // Busy intervals of a down link, start -> end, disjoint.
  using Bookings = std::map<Clock::time_point, Clock::time_point>;

  // Books the first gap of `busy` at or after `from` and returns its end; forgets intervals
  // that ended before `now`.
  static Clock::time_point book(Bookings& link, Clock::time_point from, Clock::duration busy, Clock::time_point now) {
    while (!link.empty() && link.begin()->second <= now) link.erase(link.begin());
    auto start = from;
    // The interval that starts before `from` may still cover it.
    auto it = link.upper_bound(from);
    if (it != link.begin() && std::prev(it)->second > start) start = std::prev(it)->second;
    for (; it != link.end() && it->first < start + busy; ++it) start = std::max(start, it->second);
    link.emplace(start, start + busy);
    return start + busy;
  }

  int nics_;
  std::mutex mutex_;
  std::vector<Clock::time_point> up_;
  std::vector<Bookings> down_;
};

std::shared_ptr<Fabric> make_fabric(int nodes, int nics_per_node) {
  BURST_CHECK(nodes >= 1, "fabric: nodes must be >= 1, got ", nodes);
  BURST_CHECK(nics_per_node >= 1, "fabric: nics_per_node must be >= 1, got ", nics_per_node);
  return std::make_shared<Fabric>(nodes, nics_per_node);
}

namespace {

// A send held back until its link has carried it.
class HeldSend;

// One rank's outgoing links, shared by a throttled communicator and its splits.
struct Links {
  LinkModel model;
  std::shared_ptr<Fabric> fabric;  // the nodes' shared NICs, or null: a link per rank
  // The topology of the communicator throttled() wrapped (the "world" of its splits): node of
  // each world rank, the rank's index within its node, and the node count. A split
  // renumbers its nodes (a node's own ring sees one node), so links are classed by these.
  std::vector<int> node_of_world, local_of_world;
  int nodes = 1;
  std::mutex mutex;
  Clock::time_point free_at[2] = {};  // [intra, inter]: when the link has sent what it holds
  std::vector<std::weak_ptr<HeldSend>> held;
};

class HeldSend {
 public:
  HeldSend(Communicator& inner, const void* data, std::size_t bytes, int peer, int tag, Op op, Clock::time_point at)
      : inner_(inner), data_(data), bytes_(bytes), peer_(peer), tag_(tag), op_(op), release_at_(at) {}

  // When it is due to be handed over; max once it has been.
  Clock::time_point due() {
    std::lock_guard lock(mutex_);
    return released_ ? Clock::time_point::max() : release_at_;
  }
  // Waits until the send completes or `until`, whichever is first: true once complete. An
  // unreleased send only sleeps towards its release (the caller pumps it then).
  bool wait_until(Clock::time_point until) {
    std::unique_lock lock(mutex_);
    if (!released_) {
      const auto wake = std::min(until, release_at_);
      lock.unlock();
      std::this_thread::sleep_until(wake);
      return false;
    }
    lock.unlock();
    // posted_ is only replaced by cancel(), on this rank's own thread.
    return posted_.wait_until(until);
  }
  // Hands the send to the wrapped communicator once its time has come.
  void release_if_due(Clock::time_point now) {
    std::lock_guard lock(mutex_);
    if (!released_ && now >= release_at_) {
      posted_ = inner_.isend(data_, bytes_, peer_, tag_, op_);
      released_ = true;
    }
  }
  bool done() {
    std::lock_guard lock(mutex_);
    return released_ && posted_.test();
  }
  void cancel() {
    std::lock_guard lock(mutex_);
    posted_ = Request();  // cancels a posted transfer; an unposted one is never posted
    released_ = true;
  }

 private:
  Communicator& inner_;
  const void* data_;
  std::size_t bytes_;
  int peer_, tag_;
  Op op_;
  Clock::time_point release_at_;
  std::mutex mutex_;
  bool released_ = false;
  Request posted_;
};

// Releases every held send of this rank whose time has come. Called from every test and
// wait of the rank's requests and from progress(), all on the rank's own thread, so the
// wrapped communicator is only ever called from there (MPI_THREAD_FUNNELED).
void pump(Links& links) {
  std::vector<std::shared_ptr<HeldSend>> held;
  {
    std::lock_guard lock(links.mutex);
    auto& list = links.held;
    list.erase(std::remove_if(list.begin(), list.end(), [](const auto& w) { return w.expired(); }), list.end());
    for (const auto& w : list)
      if (auto sp = w.lock()) held.push_back(std::move(sp));
  }
  const auto now = Clock::now();
  for (const auto& h : held) h->release_if_due(now);
}

// When the rank's next held send is due (max: none is held).
Clock::time_point next_due(Links& links) {
  std::vector<std::shared_ptr<HeldSend>> held;
  {
    std::lock_guard lock(links.mutex);
    for (const auto& w : links.held)
      if (auto sp = w.lock()) held.push_back(std::move(sp));
  }
  Clock::time_point due = Clock::time_point::max();
  for (const auto& h : held) due = std::min(due, h->due());
  return due;
}

// Waits for a request while keeping the rank's held sends moving: a request may depend on a
// send of this rank that is still held (a ring step's receive on the neighbour's reply). It
// wakes no later than the next held send is due, so that send leaves on time. Over a backend
// whose transfers move on their own (in-process) it blocks in wait_inner(until), which returns
// true once the request completed; over one that must be polled (MPI: progress due within
// kProgressPoll) it tests and sleeps between tests, as passive as before.
template <class Test, class WaitInner>
bool wait_pumping(Links& links, const Communicator& inner, Deadline deadline, Test&& test, WaitInner&& wait_inner) {
  for (;;) {
    pump(links);
    const auto now = Clock::now();
    const auto due = inner.progress_due();
    const auto until = std::min({deadline, next_due(links), due});
    if (due - now <= Communicator::kProgressPoll) {
      if (test()) return true;
      if (now >= deadline) return false;
      std::this_thread::sleep_until(until);
      continue;
    }
    if (wait_inner(until)) return true;
    if (Clock::now() >= deadline) return false;
  }
}

class HeldState final : public RequestState {
 public:
  HeldState(TransferInfo info, std::shared_ptr<HeldSend> send, std::shared_ptr<Links> links, const Communicator& inner)
      : RequestState(info), send_(std::move(send)), links_(std::move(links)), inner_(inner) {}
  bool test() override {
    pump(*links_);
    return send_->done();
  }
  bool wait_until(Deadline deadline) override {
    return wait_pumping(
        *links_, inner_, deadline, [&] { return send_->done(); },
        [&](Clock::time_point until) { return send_->wait_until(until); });
  }
  void cancel() override { send_->cancel(); }

 private:
  std::shared_ptr<HeldSend> send_;
  std::shared_ptr<Links> links_;
  const Communicator& inner_;
};

// A receive (or an unthrottled send) of the wrapped communicator, reported as this one's.
class Forwarded final : public RequestState {
 public:
  Forwarded(TransferInfo info, Request inner, std::shared_ptr<Links> links, const Communicator& comm)
      : RequestState(info), inner_(std::move(inner)), links_(std::move(links)), comm_(comm) {}
  bool test() override {
    pump(*links_);
    return inner_.test();
  }
  bool wait_until(Deadline deadline) override {
    return wait_pumping(
        *links_, comm_, deadline, [&] { return inner_.test(); },
        [&](Clock::time_point until) { return inner_.wait_until(until); });
  }
  void cancel() override { inner_ = Request(); }

 private:
  Request inner_;
  std::shared_ptr<Links> links_;
  const Communicator& comm_;  // the wrapped communicator
};

class ThrottledCommunicator final : public Communicator {
 public:
  // world_of: the world rank of each of inner's ranks.
  ThrottledCommunicator(Communicator& inner, std::unique_ptr<Communicator> owned, std::shared_ptr<Links> links,
                        std::vector<int> world_of)
      : Communicator(inner.rank(), inner.world_size()), inner_(&inner), owned_(std::move(owned)),
        links_(std::move(links)), world_of_(std::move(world_of)) {
    std::vector<int> same(static_cast<std::size_t>(inner.world_size()));
    std::iota(same.begin(), same.end(), 0);
    inherit_topology(inner, same);
    set_timeout(inner.timeout());
  }

  std::string_view backend() const override { return inner_->backend(); }
  std::unique_ptr<Communicator> split(int color, int key) override {
    std::unique_ptr<Communicator> child = inner_->split(color, key);
    if (!child) return nullptr;
    // The members' world ranks, from each member (collective on the new communicator).
    const int mine = world_of_[static_cast<std::size_t>(rank())];
    std::vector<int> world_of(static_cast<std::size_t>(child->world_size()));
    child->all_gather(&mine, world_of.data(), sizeof(int));
    Communicator& ref = *child;
    return std::make_unique<ThrottledCommunicator>(ref, std::move(child), links_, std::move(world_of));
  }
  void progress() override {
    pump(*links_);
    inner_->progress();
  }
  Clock::time_point progress_due() const override { return std::min(next_due(*links_), inner_->progress_due()); }

 protected:
  std::unique_ptr<RequestState> post_send(const void* data, std::size_t bytes, int peer, int tag, bool /*collective*/,
                                          TransferInfo info) override {
    const Links& l = *links_;
    const int me = world_of_[static_cast<std::size_t>(rank())], to = world_of_[static_cast<std::size_t>(peer)];
    const bool intra = l.nodes > 1 && l.node_of_world[static_cast<std::size_t>(me)] ==
                                          l.node_of_world[static_cast<std::size_t>(to)];
    const LinkModel& m = links_->model;
    const double rate = intra ? m.intra_node_bytes_per_second : m.inter_node_bytes_per_second;
    const auto latency = intra ? m.intra_node_latency : m.inter_node_latency;
    if (peer == rank() || (rate <= 0 && latency.count() == 0)) {
      return std::make_unique<Forwarded>(info, inner_->isend(data, bytes, peer, tag, info.op), links_, *inner_);
    }
    // The link sends one message after another: this one starts when the link is free.
    Clock::time_point arrive;
    auto send = std::shared_ptr<HeldSend>();
    {
      std::lock_guard lock(links_->mutex);
      const auto serialise = std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(rate > 0 ? static_cast<double>(bytes) / rate : 0.0));
      if (!intra && links_->fabric && l.nodes > 1) {
        // A rank uses its node's NIC (its index within the node) % nics_per_node.
        const int k = links_->fabric->nics_per_node();
        auto nic = [&](int w) {
          return l.node_of_world[static_cast<std::size_t>(w)] * k + l.local_of_world[static_cast<std::size_t>(w)] % k;
        };
        arrive = links_->fabric->reserve(nic(me), nic(to), serialise) + latency;
      } else {
        Clock::time_point& free_at = links_->free_at[intra ? 0 : 1];
        free_at = std::max(Clock::now(), free_at) + serialise;
        arrive = free_at + latency;
      }
      send = std::make_shared<HeldSend>(*inner_, data, bytes, peer, tag, info.op, arrive);
      links_->held.push_back(send);
    }
    return std::make_unique<HeldState>(info, std::move(send), links_, *inner_);
  }
  std::unique_ptr<RequestState> post_recv(void* data, std::size_t bytes, int peer, int tag, bool /*collective*/,
                                          TransferInfo info) override {
    return std::make_unique<Forwarded>(info, inner_->irecv(data, bytes, peer, tag, info.op), links_, *inner_);
  }

 private:
  Communicator* inner_;
  std::unique_ptr<Communicator> owned_;
  std::shared_ptr<Links> links_;
  std::vector<int> world_of_;
};

}  // namespace

LinkModel link_model_from_environment() {
  LinkModel m;
  m.inter_node_bytes_per_second = env_number("BURST_LINK_GBPS") * 1e9 / 8;
  m.intra_node_bytes_per_second = env_number("BURST_INTRA_GBPS") * 1e9 / 8;
  m.inter_node_latency = std::chrono::microseconds(static_cast<std::int64_t>(env_number("BURST_LINK_LATENCY_US")));
  m.intra_node_latency = std::chrono::microseconds(static_cast<std::int64_t>(env_number("BURST_INTRA_LATENCY_US")));
  return m;
}

std::unique_ptr<Communicator> throttled(Communicator& inner, const LinkModel& model, std::shared_ptr<Fabric> fabric) {
  auto links = std::make_shared<Links>();
  links->model = model;
  links->fabric = std::move(fabric);
  links->node_of_world = inner.node_of_rank();
  links->nodes = inner.node_count();
  const auto& nodes = links->node_of_world;
  for (std::size_t r = 0; r < nodes.size(); ++r)
    links->local_of_world.push_back(static_cast<int>(std::count(nodes.begin(), nodes.begin() + static_cast<std::ptrdiff_t>(r), nodes[r])));
  std::vector<int> world_of(static_cast<std::size_t>(inner.world_size()));
  std::iota(world_of.begin(), world_of.end(), 0);
  return std::make_unique<ThrottledCommunicator>(inner, nullptr, std::move(links), std::move(world_of));
}

}  // namespace burst::comm
