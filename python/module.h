// What the extension's binding files share (module.cpp defines it): the Python
// communicator and the views of torch tensors.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "burst/communicator.h"
#include "burst/local_world.h"
#include "burst/tensor.h"
#include "torch_group.h"

namespace burst::python {

namespace py = pybind11;

// A communicator for Python: one rank of this process, a duplicate of an mpi4py
// communicator, or a torch.distributed ProcessGroup. Calls on one communicator
// are serialised, since its transfers must pair up in the same order on every
// rank.
class PyCommunicator {
public:
  explicit PyCommunicator(std::unique_ptr<comm::Communicator> c)
      : comm_(std::move(c)) {}

  static std::unique_ptr<PyCommunicator> single() {
    return std::make_unique<PyCommunicator>(comm::single_rank_communicator());
  }

  // A duplicate of an mpi4py communicator (collective); ValueError without
  // mpi4py support.
  static std::unique_ptr<PyCommunicator>
  from_mpi4py(const py::object &mpi_comm);

  // Collective over the group (the ranks exchange host names).
  static std::unique_ptr<PyCommunicator>
  from_process_group(const py::object &group, std::vector<int> global_ranks) {
    return std::make_unique<PyCommunicator>(
        process_group_communicator(group, std::move(global_ranks)));
  }

  comm::Communicator &get() { return *comm_; }
  std::mutex &mutex() { return mutex_; }
  int rank() const { return comm_->rank(); }
  int world_size() const { return comm_->world_size(); }
  std::string backend() const { return std::string(comm_->backend()); }
  double timeout() const {
    return std::chrono::duration<double>(comm_->timeout()).count();
  }
  // Deadlines count in milliseconds on a clock of int64 nanoseconds: below 1 ms
  // every wait would time out at once, and past kMaxTimeout the deadline would
  // overflow.
  static constexpr double kMinTimeout = 1e-3, kMaxTimeout = 1e9;
  void set_timeout(double seconds) {
    if (!(seconds >= kMinTimeout && seconds <= kMaxTimeout)) {
      std::ostringstream os;
      os << "timeout: expected " << kMinTimeout << " to " << kMaxTimeout
         << " seconds, got " << seconds;
      throw py::value_error(os.str());
    }
    comm_->set_timeout(std::chrono::milliseconds(
        static_cast<std::int64_t>(seconds * 1000.0 + 0.5)));
  }

  // Every rank's `value`, in rank order. Collective.
  std::vector<std::int64_t> all_gather_int(std::int64_t value) {
    std::vector<std::int64_t> all(
        static_cast<std::size_t>(comm_->world_size()));
    py::gil_scoped_release release;
    std::lock_guard lock(mutex_);
    comm_->all_gather(&value, all.data(), sizeof(value));
    return all;
  }

  // recv (a contiguous CPU tensor of world_size x the bytes of send) receives
  // every rank's send in rank order. Collective.
  void all_gather_bytes(const py::handle &send, const py::handle &recv);

private:
  std::unique_ptr<comm::Communicator> comm_;
  std::mutex mutex_;
};

// A torch tensor's address, shape, element strides and dtype name.
struct TorchTensor {
  std::vector<std::int64_t> shape, strides;
  void *data = nullptr;
  std::string dtype;
};
// Reads a torch tensor, checking it is a CPU tensor of `ndim` dimensions with a
// contiguous last one (TypeError / ValueError naming `name`).
TorchTensor read_tensor(const py::handle &t, const char *name,
                        std::size_t ndim);
// A [b, s, h, d] view of a float32 or bfloat16 torch tensor.
TensorView tensor_view(const py::handle &t, const char *name);
// A [b, h, s] view of a float32 torch tensor with a contiguous last dimension.
RowStatsView stats_view(const py::handle &t, const char *name);

} // namespace burst::python
