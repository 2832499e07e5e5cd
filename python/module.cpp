// The extension module burst._burst: a thin table over the C++ library for burst/_ops.py.
// Torch tensors are read through their Python attributes (data_ptr, dtype, shape, stride),
// so the module needs no libtorch headers and builds in seconds; the Python side allocates
// every output and keeps the tensors alive for the length of a call. Every call into the
// library runs with the GIL released (the torch.distributed communicator takes it back for
// the moment of each post).
//
// Communicators: one rank of this process, a duplicate of an mpi4py communicator, or a
// torch.distributed ProcessGroup (torch_group.h). Strategies come from the library's table
// (burst/strategy.h): names, what each cannot run, and its byte formulas.
//
// Errors: burst::comm::CommError (failed transfers, lost peers, timeouts, disagreeing ranks)
// -> burst.CommError, a subclass of RuntimeError (burst.CommTimeoutError for timeouts); any
// other burst::Error (bad shapes, options) -> ValueError; both keep the library's message.
#ifndef BURST_HAVE_MPI4PY
#define BURST_HAVE_MPI4PY 0
#endif
#if BURST_HAVE_MPI4PY
// The C API only: keep the obsolete MPI C++ bindings out of this translation unit.
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi4py/mpi4py.h>
#endif

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "burst/error.h"
#include "burst/kernels.h"
#include "burst/layout.h"
#include "burst/local_world.h"
#include "burst/strategy.h"
#include "burst/version.h"
#include "burst/world.h"
#include "decode_binding.h"
#include "module.h"
#include "plan_binding.h"
#include "torch_group.h"

namespace py = pybind11;

namespace burst::python {

std::unique_ptr<PyCommunicator> PyCommunicator::from_mpi4py(const py::object& mpi_comm) {
#if BURST_HAVE_MPI4PY
  if (import_mpi4py() < 0) throw py::error_already_set();
  MPI_Comm* handle = PyMPIComm_Get(mpi_comm.ptr());  // TypeError when it is no mpi4py Comm
  if (handle == nullptr) throw py::error_already_set();
  py::gil_scoped_release release;  // collective: other Python threads may run meanwhile
  return std::make_unique<PyCommunicator>(comm::mpi_communicator_from(handle));
#else
  (void)mpi_comm;
  throw py::value_error("comm: this build of burst has no mpi4py support (install python3-mpi4py and "
                        "rebuild with BURST_WITH_MPI=ON); a torch.distributed group works without it");
#endif
}

namespace {
std::string attr_string(const py::handle& obj, const char* attr) { return py::str(obj.attr(attr)).cast<std::string>(); }
}  // namespace

// Reads a torch tensor, checking it is a CPU tensor of `ndim` dimensions with a contiguous
// last one.
TorchTensor read_tensor(const py::handle& t, const char* name, std::size_t ndim) {
  if (!py::hasattr(t, "data_ptr") || !py::hasattr(t, "stride")) {
    throw py::type_error(std::string(name) + ": expected a torch.Tensor, got " + attr_string(py::type::of(t), "__name__"));
  }
  const std::string device = attr_string(t.attr("device"), "type");
  if (device != "cpu") throw py::value_error(std::string(name) + ": expected a CPU tensor, got device " + device);
  TorchTensor l;
  l.shape = py::cast<std::vector<std::int64_t>>(t.attr("shape"));
  l.strides = py::cast<std::vector<std::int64_t>>(t.attr("stride")());
  l.dtype = attr_string(t, "dtype");
  if (l.shape.size() != ndim) {
    throw py::value_error(std::string(name) + ": expected " + std::to_string(ndim) + " dimensions, got " +
                          std::to_string(l.shape.size()));
  }
  // Before data_ptr: torch gives an empty tensor a null address, which would hide the
  // actual problem.
  for (const std::int64_t n : l.shape) {
    if (n < 1) {
      std::string shape;
      for (const std::int64_t m : l.shape) shape += (shape.empty() ? "" : ", ") + std::to_string(m);
      throw py::value_error(std::string(name) + ": expected every dimension to be at least 1, got shape [" + shape + "]");
    }
  }
  if (l.strides.back() != 1 && l.shape.back() > 1) {
    throw py::value_error(std::string(name) + ": expected a contiguous last dimension, got stride " +
                          std::to_string(l.strides.back()));
  }
  l.data = reinterpret_cast<void*>(t.attr("data_ptr")().cast<std::uintptr_t>());
  return l;
}

// A [b, s, h, d] view of a float32 or bfloat16 torch tensor.
TensorView tensor_view(const py::handle& t, const char* name) {
  const TorchTensor l = read_tensor(t, name, 4);
  TensorView v;
  if (l.dtype == "torch.float32") {
    v.dtype = DType::kF32;
  } else if (l.dtype == "torch.bfloat16") {
    v.dtype = DType::kBF16;
  } else {
    throw py::value_error(std::string(name) + ": expected dtype torch.float32 or torch.bfloat16, got " + l.dtype);
  }
  v.data = l.data;
  v.b = l.shape[0], v.s = l.shape[1], v.h = l.shape[2], v.d = l.shape[3];
  v.stride_b = l.strides[0], v.stride_s = l.strides[1], v.stride_h = l.strides[2];
  return v;
}

// A [b, h, s] view of a float32 torch tensor with a contiguous last dimension.
RowStatsView stats_view(const py::handle& t, const char* name) {
  const TorchTensor l = read_tensor(t, name, 3);
  if (l.dtype != "torch.float32") throw py::value_error(std::string(name) + ": expected dtype torch.float32, got " + l.dtype);
  RowStatsView v;
  v.data = static_cast<float*>(l.data);
  v.b = l.shape[0], v.h = l.shape[1], v.s = l.shape[2];
  v.stride_b = l.strides[0], v.stride_h = l.strides[1];
  return v;
}

namespace {

// What one attention() call computes, besides its tensors. It owns the packed documents'
// boundaries that options.mask.documents views, so it never moves or copies (pybind11 holds
// it by unique_ptr); the autograd context keeps it alive from the forward to the backward.
struct Settings {
  const algo::StrategyInfo* strategy = nullptr;
  algo::StrategyOptions options;
  std::vector<std::int64_t> documents;  // cu_seqlens (global offsets); empty: one document

  Settings() = default;
  Settings(const Settings&) = delete;
  Settings& operator=(const Settings&) = delete;
};

// The mask of a call: causal, window sides and the documents (viewed, not copied: `documents`
// must outlive every use of the mask).
kernels::MaskSpec make_mask(bool causal, std::int64_t window_left, std::int64_t window_right,
                            const std::vector<std::int64_t>& documents) {
  kernels::MaskSpec mask;
  mask.causal = causal;
  mask.window_left = window_left;
  mask.window_right = window_right;
  mask.documents = documents;
  return mask;
}

std::unique_ptr<Settings> make_settings(const std::string& strategy, const std::string& layout, std::int64_t seqlen,
                                        bool causal, std::int64_t window_left, std::int64_t window_right,
                                        std::optional<float> scale, const std::string& backward_scheme,
                                        int ulysses_degree, int threads,
                                        std::optional<std::vector<std::int64_t>> documents) {
  auto owned = std::make_unique<Settings>();
  Settings& s = *owned;
  s.strategy = &algo::find_strategy(strategy, "strategy");
  BURST_CHECK(!s.strategy->layer_only, "strategy: ", strategy,
              " shards a layer's weights by heads and runs only as a layer (burst run --layer), not on attention "
              "shards");
  s.options.layout = algo::parse_layout(layout, "layout");
  s.options.backward_scheme = algo::parse_scheme(backward_scheme, "backward_scheme");
  BURST_CHECK(seqlen >= 1, "seqlen: expected >= 1, got ", seqlen);
  s.options.seqlen = seqlen;
  // The Python side has checked the offsets against seqlen (naming cu_seqlens); the library
  // checks them again where it reads them.
  if (documents) s.documents = std::move(*documents);
  s.options.mask = make_mask(causal, window_left, window_right, s.documents);
  s.options.scale = scale;
  BURST_CHECK(ulysses_degree >= 1, "ulysses_degree: expected >= 1, got ", ulysses_degree);
  s.options.ulysses_degree = ulysses_degree;
  BURST_CHECK(threads >= 1, "threads: expected >= 1, got ", threads);
  s.options.threads = threads;
  return owned;
}

// Every rank's token positions under `layout` (shard_plan), the mask read by the layouts that
// place tokens by it (doc-zigzag, balanced).
std::vector<std::vector<std::int64_t>> shard_plan(std::int64_t seqlen, int world_size, const std::string& layout,
                                                  bool causal, std::int64_t window_left, std::int64_t window_right,
                                                  std::optional<std::vector<std::int64_t>> documents) {
  BURST_CHECK(world_size >= 1, "world_size: expected >= 1, got ", world_size);
  BURST_CHECK(seqlen >= world_size, "seqlen: expected at least one token per rank (", world_size, "), got ", seqlen);
  const algo::Layout l = algo::parse_layout(layout, "layout");
  const std::vector<std::int64_t> bounds = documents ? std::move(*documents) : std::vector<std::int64_t>{};
  py::gil_scoped_release release;  // the mask-reading layouts walk every token
  return algo::shard_plan(seqlen, world_size, l, make_mask(causal, window_left, window_right, bounds));
}

// The problem as the table's formulas read it.
algo::ProblemShape problem_shape(std::int64_t batch, std::int64_t n_heads_q, std::int64_t n_heads_kv,
                                 std::int64_t head_dim, std::size_t element_bytes, std::size_t output_bytes) {
  algo::ProblemShape shape;
  shape.batch = batch, shape.n_heads_q = n_heads_q, shape.n_heads_kv = n_heads_kv, shape.head_dim = head_dim;
  shape.element_bytes = element_bytes, shape.output_bytes = output_bytes;
  return shape;
}

// Why the settings' strategy cannot run the problem over `ranks` ranks; "" when it can.
std::string cannot_run(const Settings& s, std::int64_t batch, std::int64_t n_heads_q, std::int64_t n_heads_kv,
                       std::int64_t head_dim, int ranks) {
  return s.strategy->cannot_run(problem_shape(batch, n_heads_q, n_heads_kv, head_dim, 4, 4), ranks, s.options, false);
}

// The bytes rank `rank` sends in one forward and one backward by the strategy's formula,
// when the ranks' shards have `shard_lengths` tokens.
py::dict strategy_bytes(const Settings& s, std::int64_t batch, std::int64_t n_heads_q, std::int64_t n_heads_kv,
                        std::int64_t head_dim, std::size_t element_bytes, std::size_t output_bytes,
                        const std::vector<std::int64_t>& shard_lengths, int rank) {
  BURST_CHECK(rank >= 0 && static_cast<std::size_t>(rank) < shard_lengths.size(), "rank: expected 0 to ",
              shard_lengths.size(), " - 1, got ", rank);
  const algo::StrategyBytes b = s.strategy->bytes(
      problem_shape(batch, n_heads_q, n_heads_kv, head_dim, element_bytes, output_bytes), shard_lengths, rank,
      s.options);
  py::dict d;
  d["forward"] = b.forward;
  d["backward"] = b.backward;
  d["scheme"] = algo::scheme_name(b.scheme);
  return d;
}

}  // namespace

void PyCommunicator::all_gather_bytes(const py::handle& send, const py::handle& recv) {
  const TorchTensor s = read_tensor(send, "send", 1), r = read_tensor(recv, "recv", 1);
  BURST_CHECK(s.dtype == "torch.uint8" && r.dtype == "torch.uint8",
              "all_gather_bytes: expected torch.uint8 tensors, got ", s.dtype, " and ", r.dtype);
  BURST_CHECK(s.strides[0] == 1 && r.strides[0] == 1, "all_gather_bytes: expected contiguous tensors");
  BURST_CHECK(r.shape[0] == s.shape[0] * comm_->world_size(), "recv: expected ", s.shape[0] * comm_->world_size(),
              " bytes (world_size x send), got ", r.shape[0]);
  py::gil_scoped_release release;
  std::lock_guard lock(mutex_);
  comm_->all_gather(s.data, r.data, static_cast<std::size_t>(s.shape[0]));
}

namespace {

py::dict stats_dict(const algo::StrategyStats& s) {
  py::dict d;
  d["bytes_sent"] = s.bytes_sent;
  d["bytes_received"] = s.bytes_received;
  d["bytes_saved"] = s.bytes_saved;
  d["compute_seconds"] = s.compute_seconds;
  d["wait_seconds"] = s.wait_seconds;
  d["steps_computed"] = s.steps_computed;
  d["steps_skipped"] = s.steps_skipped;
  d["scheme"] = algo::scheme_name(s.scheme);
  return d;
}

// Checks q, k, v against each other before any rank packs them: the strategies size their
// buffers from k, so a v of another shape must be refused first. The kernels' own check, so
// the messages are the library's.
void check_inputs(const TensorView& q, const TensorView& k, const TensorView& v, const Settings& s) {
  kernels::AttentionOptions o;
  o.scale = s.options.scale;
  o.threads = s.options.threads;
  kernels::check_inputs(q, k, v, o);
}

py::dict forward(PyCommunicator& c, const Settings& s, const py::handle& q, const py::handle& k, const py::handle& v,
                 const py::handle& out, const py::handle& lse) {
  const TensorView qv = tensor_view(q, "q"), kv = tensor_view(k, "k"), vv = tensor_view(v, "v");
  const TensorView ov = tensor_view(out, "out");
  const RowStatsView lv = stats_view(lse, "lse");
  check_inputs(qv, kv, vv, s);
  algo::StrategyStats stats;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(c.mutex());
    stats = s.strategy->forward(c.get(), qv, kv, vv, ov, lv, s.options);
  }
  return stats_dict(stats);
}

py::dict backward(PyCommunicator& c, const Settings& s, const py::handle& q, const py::handle& k, const py::handle& v,
                  const py::handle& out, const py::handle& lse, const py::handle& dout, const py::handle& dq,
                  const py::handle& dk, const py::handle& dv) {
  const TensorView qv = tensor_view(q, "q"), kv = tensor_view(k, "k"), vv = tensor_view(v, "v");
  const TensorView ov = tensor_view(out, "out"), dov = tensor_view(dout, "dout");
  const RowStatsView lv = stats_view(lse, "lse");
  const TensorView dqv = tensor_view(dq, "dq"), dkv = tensor_view(dk, "dk"), dvv = tensor_view(dv, "dv");
  check_inputs(qv, kv, vv, s);
  algo::StrategyStats stats;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(c.mutex());
    stats = s.strategy->backward(c.get(), qv, kv, vv, ov, lv, dov, dqv, dkv, dvv, s.options);
  }
  return stats_dict(stats);
}

}  // namespace
}  // namespace burst::python

PYBIND11_MODULE(_burst, m) {
  using namespace burst::python;
  namespace algo = burst::algo;
  m.doc() = "Burst's C++ core; use the burst package, not this module";
  bind_plan(m);  // burst.plan: the cost model (plan_binding.cpp)

  static py::exception<burst::comm::CommError> comm_error(m, "CommError", PyExc_RuntimeError);
  static py::exception<burst::comm::TimeoutError> timeout_error(m, "CommTimeoutError", comm_error.ptr());
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const burst::comm::TimeoutError& e) {
      timeout_error(e.what());
    } catch (const burst::comm::CommError& e) {
      comm_error(e.what());
    } catch (const burst::Error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  py::class_<PyCommunicator>(m, "Communicator")
      .def_static("single", &PyCommunicator::single)
      .def_static("from_mpi4py", &PyCommunicator::from_mpi4py, py::arg("comm"))
      .def_static("from_process_group", &PyCommunicator::from_process_group, py::arg("group"),
                  py::arg("global_ranks"))
      .def_property_readonly("rank", &PyCommunicator::rank)
      .def_property_readonly("world_size", &PyCommunicator::world_size)
      .def_property_readonly("backend", &PyCommunicator::backend)
      .def_property("timeout", &PyCommunicator::timeout, &PyCommunicator::set_timeout)
      .def("all_gather_int", &PyCommunicator::all_gather_int, py::arg("value"))
      .def("all_gather_bytes", &PyCommunicator::all_gather_bytes, py::arg("send"), py::arg("recv"));
  bind_decode(m);  // burst.KvCache: prefill and decoding over a sharded KV cache (decode_binding.cpp)

  py::class_<Settings>(m, "Settings");
  m.def("make_settings", &make_settings, py::arg("strategy"), py::arg("layout"), py::arg("seqlen"),
        py::arg("causal"), py::arg("window_left"), py::arg("window_right"), py::arg("scale"),
        py::arg("backward_scheme"), py::arg("ulysses_degree"), py::arg("threads"), py::arg("documents") = py::none());
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("cannot_run", &cannot_run, py::arg("settings"), py::arg("batch"), py::arg("n_heads_q"),
        py::arg("n_heads_kv"), py::arg("head_dim"), py::arg("ranks"));
  m.def("strategy_bytes", &strategy_bytes, py::arg("settings"), py::arg("batch"), py::arg("n_heads_q"),
        py::arg("n_heads_kv"), py::arg("head_dim"), py::arg("element_bytes"), py::arg("output_bytes"),
        py::arg("shard_lengths"), py::arg("rank"));
  // The strategies attention() runs (the table's, less the layer-only ones), in its order.
  py::list names;
  for (const algo::StrategyInfo& info : algo::strategies()) {
    if (!info.layer_only) names.append(std::string(info.name));
  }
  m.attr("strategies") = py::tuple(names);
  m.def(
      "positions",
      [](std::int64_t seqlen, int world_size, int rank, const std::string& layout, bool causal,
         std::int64_t window_left, std::int64_t window_right, std::optional<std::vector<std::int64_t>> documents) {
        BURST_CHECK(world_size >= 1, "world_size: expected >= 1, got ", world_size);
        BURST_CHECK(rank >= 0 && rank < world_size, "rank: expected 0 <= rank < ", world_size, ", got ", rank);
        BURST_CHECK(seqlen >= world_size, "seqlen: expected at least one token per rank (", world_size, "), got ",
                    seqlen);
        const algo::Layout l = algo::parse_layout(layout, "layout");
        const std::vector<std::int64_t> bounds = documents ? std::move(*documents) : std::vector<std::int64_t>{};
        py::gil_scoped_release release;
        return algo::shard_positions(seqlen, world_size, rank, l, make_mask(causal, window_left, window_right, bounds));
      },
      py::arg("seqlen"), py::arg("world_size"), py::arg("rank"), py::arg("layout"), py::arg("causal") = false,
      py::arg("window_left") = -1, py::arg("window_right") = -1, py::arg("documents") = py::none());
  m.def("shard_plan", &shard_plan, py::arg("seqlen"), py::arg("world_size"), py::arg("layout"),
        py::arg("causal") = false, py::arg("window_left") = -1, py::arg("window_right") = -1,
        py::arg("documents") = py::none());
  // The layouts attention() takes, and those of them that place tokens by the mask.
  py::list layout_names, mask_layout_names;
  for (const algo::Layout l : algo::layouts()) {
    layout_names.append(algo::layout_name(l));
    if (algo::layout_reads_mask(l)) mask_layout_names.append(algo::layout_name(l));
  }
  m.attr("layouts") = py::tuple(layout_names);
  m.attr("mask_layouts") = py::tuple(mask_layout_names);
  m.attr("mpi4py_support") = static_cast<bool>(BURST_HAVE_MPI4PY);
  // The library's version, which the package reports as burst.__version__.
  m.attr("__version__") = burst::version();
  // The Python side checks `threads` against it before it reaches a C++ int.
  m.attr("max_threads") = burst::kernels::kMaxThreads;
}
