// The MPI backend. Thread level: MPI_THREAD_FUNNELED. Only the thread that called MPI_Init
// makes MPI calls: Burst's worker threads compute and never communicate, and progress
// polling between tiles runs on the rank's calling thread (worker 0 of its pool), so the
// cheaper level suffices and MPICH and Open MPI both provide it.
//
// Our communicators use MPI_ERRORS_RETURN; every failing call becomes a burst::Error that
// names the call and MPI's own message. Waits poll MPI_Test with a growing sleep (yielding
// at first), never spinning on a core another rank may need, and end at the deadline.
// The C API only: keep the obsolete MPI C++ bindings out of this translation unit.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <thread>

#include "burst/communicator.h"
#include "burst/world.h"

namespace burst::comm {
namespace {

void check(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw CommError(std::string(call) + " failed: " + std::string(text, static_cast<std::size_t>(len)));
}

void finalize_at_exit() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

void ensure_initialized() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  BURST_CHECK(provided >= MPI_THREAD_FUNNELED, "MPI: need thread level MPI_THREAD_FUNNELED, the library provides ",
              provided);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  std::atexit(finalize_at_exit);
}

class MpiRequest : public RequestState {
 public:
  MpiRequest(MPI_Request request, TransferInfo info) : RequestState(info), request_(request) {}

  bool test() override {
    if (done_) return true;
    int flag = 0;
    MPI_Status status;
    check(MPI_Test(&request_, &flag, &status), "MPI_Test");
    if (!flag) return false;
    done_ = true;
    if (!info().is_send) {
      int count = 0;
      check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
      if (static_cast<std::size_t>(count) != info().bytes) {
        throw CommError(info().describe() + ": message size mismatch: rank " + std::to_string(info().peer) +
                        " sent " + std::to_string(count) + " bytes");
      }
    }
    return true;
  }

  // Open MPI moves a large message only while the caller is inside MPI, so the first
  // kYieldPhase of a wait polls with a yield between tests (passive when ranks share cores,
  // as Open MPI's own mpi_yield_when_idle); after that the sleeps grow to 1 ms. Sleeping from
  // the start halved the bandwidth of 16-64 MiB transfers (docs/comm.md).
  bool wait_until(Deadline deadline) override {
    constexpr auto kYieldPhase = std::chrono::milliseconds(20);
    const auto yield_until = Clock::now() + kYieldPhase;
    auto pause = std::chrono::microseconds(0);
    for (;;) {
      if (test()) return true;
      const auto now = Clock::now();
      if (now >= deadline) return false;
      if (now < yield_until) {
        std::this_thread::yield();
      } else {
        pause = std::min<std::chrono::microseconds>(std::max(pause * 2, std::chrono::microseconds(10)),
                                                    std::chrono::microseconds(1000));
        std::this_thread::sleep_for(pause);
      }
    }
  }

  void cancel() override {
    if (done_ || request_ == MPI_REQUEST_NULL) return;
    MPI_Cancel(&request_);
    if (info().is_send) {
      MPI_Request_free(&request_);  // a send may not be cancellable; let MPI finish it
    } else {
      MPI_Wait(&request_, MPI_STATUS_IGNORE);
    }
    done_ = true;
  }

 private:
  MPI_Request request_;
  bool done_ = false;
};

int rank_of(MPI_Comm comm) {
  int rank = 0;
  check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank");
  return rank;
}

int size_of(MPI_Comm comm) {
  int size = 0;
  check(MPI_Comm_size(comm, &size), "MPI_Comm_size");
  return size;
}

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of `comm` (already configured with MPI_ERRORS_RETURN).
  // A world communicator over `comm`, nodes found through shared memory.
  static std::unique_ptr<MpiCommunicator> create(MPI_Comm comm) {
    std::unique_ptr<MpiCommunicator> c(new MpiCommunicator(comm));
    c->discover_topology();
    return c;
  }

  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    MPI_Comm_free(&collective_);
    MPI_Comm_free(&comm_);
  }

  std::string_view backend() const override { return "mpi"; }

  std::unique_ptr<Communicator> split(int color, int key) override {
    MPI_Comm child = MPI_COMM_NULL;
    check(MPI_Comm_split(comm_, color < 0 ? MPI_UNDEFINED : color, key, &child), "MPI_Comm_split");
    if (child == MPI_COMM_NULL) return nullptr;
    check(MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    std::unique_ptr<MpiCommunicator> c(new MpiCommunicator(child));
    c->set_timeout(timeout());
    // Members keep the nodes they have here.
    const int me = rank();
    std::vector<int> parents(static_cast<std::size_t>(c->world_size()));
    c->all_gather(&me, parents.data(), sizeof(int));
    c->inherit_topology(*this, parents);
    return c;
  }

  void progress() override {
    int flag = 0;
    MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &flag, MPI_STATUS_IGNORE);
  }

 protected:
  // MPI counts are ints: one message carries at most INT_MAX bytes.
  int to_count(std::size_t bytes, const TransferInfo& info) const {
    if (bytes > static_cast<std::size_t>(INT_MAX)) {
      unsupported("messages over " + std::to_string(INT_MAX) + " bytes (" + info.describe() + ")");
    }
    return static_cast<int>(bytes);
  }

  std::unique_ptr<RequestState> post_send(const void* data, std::size_t bytes, int peer, int tag,
                                          bool collective, TransferInfo info) override {
    MPI_Request r;
    check(MPI_Isend(data, to_count(bytes, info), MPI_BYTE, peer, tag, collective ? collective_ : comm_, &r),
          "MPI_Isend");
    return std::make_unique<MpiRequest>(r, info);
  }
  std::unique_ptr<RequestState> post_recv(void* data, std::size_t bytes, int peer, int tag,
                                          bool collective, TransferInfo info) override {
    MPI_Request r;
    check(MPI_Irecv(data, to_count(bytes, info), MPI_BYTE, peer, tag, collective ? collective_ : comm_, &r),
          "MPI_Irecv");
    return std::make_unique<MpiRequest>(r, info);
  }

 private:
  explicit MpiCommunicator(MPI_Comm comm) : Communicator(rank_of(comm), size_of(comm)), comm_(comm) {
    check(MPI_Comm_dup(comm_, &collective_), "MPI_Comm_dup");
    check(MPI_Comm_set_errhandler(collective_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  }

  // Ranks that share memory form a node; a node is named by its lowest rank.
  void discover_topology() {
    MPI_Comm shared = MPI_COMM_NULL;
    check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank(), MPI_INFO_NULL, &shared),
          "MPI_Comm_split_type");
    int leader = rank();
    check(MPI_Allreduce(MPI_IN_PLACE, &leader, 1, MPI_INT, MPI_MIN, shared), "MPI_Allreduce");
    MPI_Comm_free(&shared);
    std::vector<int> leaders(static_cast<std::size_t>(world_size()));
    all_gather(&leader, leaders.data(), sizeof(int));
    std::vector<int> nodes(leaders.size()), seen;
    for (std::size_t r = 0; r < leaders.size(); ++r) {
      auto it = std::find(seen.begin(), seen.end(), leaders[r]);
      if (it == seen.end()) it = seen.insert(seen.end(), leaders[r]);
      nodes[r] = static_cast<int>(it - seen.begin());
    }
    set_topology(std::move(nodes));
  }

  MPI_Comm comm_;
  MPI_Comm collective_ = MPI_COMM_NULL;
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> mpi_world_communicator() {
  ensure_initialized();
  MPI_Comm comm = MPI_COMM_NULL;
  check(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  return MpiCommunicator::create(comm);
}

std::unique_ptr<Communicator> mpi_communicator_from(const void* mpi_comm) {
  BURST_CHECK(mpi_comm != nullptr, "comm: expected a pointer to an MPI_Comm, got a null pointer");
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  BURST_CHECK(initialized && !finalized, "comm: MPI must be initialised and not yet finalised");
  int provided = 0;
  check(MPI_Query_thread(&provided), "MPI_Query_thread");
  BURST_CHECK(provided >= MPI_THREAD_FUNNELED, "comm: need MPI thread level MPI_THREAD_FUNNELED, MPI was initialised with ",
              provided);
  const MPI_Comm given = *static_cast<const MPI_Comm*>(mpi_comm);
  BURST_CHECK(given != MPI_COMM_NULL, "comm: expected a communicator, got MPI_COMM_NULL");
  // A duplicate, so neither the caller's messages nor its error handler meet ours.
  MPI_Comm comm = MPI_COMM_NULL;
  check(MPI_Comm_dup(given, &comm), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  return MpiCommunicator::create(comm);
}

void mpi_abort(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

}  // namespace burst::comm
