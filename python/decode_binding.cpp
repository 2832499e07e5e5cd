#include "decode_binding.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "burst/decode.h"
#include "burst/error.h"
#include "burst/layout.h"
#include "module.h"

namespace py = pybind11;

namespace burst::python {
namespace {

// One rank's share of a KV cache over a communicator, with the options every
// call on it uses (a prompt prefilled with one window and decoded with another
// would not be one model). Holds a reference to the communicator; the binding
// keeps its Python object alive.
class PyKvCache {
public:
  PyKvCache(PyCommunicator &comm, const std::string &strategy,
            std::int64_t batch, std::int64_t n_heads_kv, std::int64_t head_dim,
            const std::string &dtype, std::int64_t capacity,
            std::int64_t window_left, std::optional<float> scale, int threads)
      : comm_(&comm),
        cache_(comm.get(), algo::parse_decode_strategy(strategy, "strategy"),
               batch, n_heads_kv, head_dim, parse_dtype(dtype, "dtype"),
               capacity) {
    BURST_CHECK(capacity >= 0, "capacity: expected >= 0, got ", capacity);
    BURST_CHECK(threads >= 1 && threads <= kernels::kMaxThreads,
                "threads: expected 1 to ", kernels::kMaxThreads, ", got ",
                threads);
    options_.window_left = window_left < 0 ? -1 : window_left;
    options_.scale = scale;
    options_.threads = threads;
  }

  // This rank's shards of the prompt (positions 0 .. seqlen - 1 in `layout`),
  // causal.
  py::dict prefill(const py::handle &q, const py::handle &k,
                   const py::handle &v, const py::handle &out,
                   const py::handle &lse, const std::string &layout,
                   std::int64_t seqlen) {
    const TensorView qv = tensor_view(q, "q"), kv = tensor_view(k, "k"),
                     vv = tensor_view(v, "v");
    const TensorView ov = tensor_view(out, "out");
    const RowStatsView lv = stats_view(lse, "lse");
    algo::BurstOptions o;
    o.layout = algo::parse_layout(layout, "layout");
    BURST_CHECK(seqlen >= comm_->world_size(),
                "seqlen: expected at least one token per rank (",
                comm_->world_size(), "), got ", seqlen);
    o.seqlen = seqlen;
    o.mask.causal = true;
    o.mask.window_left = options_.window_left;
    o.scale = options_.scale;
    o.threads = options_.threads;
    kernels::AttentionOptions
        ko; // the kernels' own shape checks, before any rank communicates
    ko.scale = o.scale;
    ko.threads = o.threads;
    kernels::check_inputs(qv, kv, vv, ko);
    algo::StrategyStats stats;
    {
      py::gil_scoped_release release;
      std::lock_guard lock(comm_->mutex());
      stats = algo::prefill(comm_->get(), cache_, qv, kv, vv, ov, lv, o);
    }
    py::dict d;
    d["bytes_sent"] = stats.bytes_sent;
    d["compute_seconds"] = stats.compute_seconds;
    d["wait_seconds"] = stats.wait_seconds;
    return d;
  }

  // C new tokens (the same on every rank): appended, then attended to the whole
  // cache.
  py::dict extend(const py::handle &q, const py::handle &k, const py::handle &v,
                  const py::handle &out, const py::handle &lse) {
    const TensorView qv = tensor_view(q, "q"), kv = tensor_view(k, "k"),
                     vv = tensor_view(v, "v");
    const TensorView ov = tensor_view(out, "out");
    const RowStatsView lv = stats_view(lse, "lse");
    algo::DecodeStats stats;
    {
      py::gil_scoped_release release;
      std::lock_guard lock(comm_->mutex());
      stats = algo::extend(comm_->get(), cache_, qv, kv, vv, ov, lv, options_);
    }
    py::dict d;
    d["bytes_sent"] = stats.bytes_sent;
    d["compute_seconds"] = stats.compute_seconds;
    d["wait_seconds"] = stats.wait_seconds;
    d["skipped"] = stats.skipped;
    return d;
  }

  // Bytes this rank sends in the next extend of `tokens` tokens with n_heads_q
  // query heads.
  std::uint64_t extend_bytes(std::int64_t tokens,
                             std::int64_t n_heads_q) const {
    BURST_CHECK(tokens >= 1, "tokens: expected >= 1, got ", tokens);
    BURST_CHECK(n_heads_q >= 1 && n_heads_q % cache_.kv_heads() == 0,
                "n_heads_q: expected a multiple of the ", cache_.kv_heads(),
                " kv heads, got ", n_heads_q);
    std::vector<std::int64_t> after =
        cache_.tokens_per_rank(); // as extend appends them
    if (cache_.strategy() != algo::DecodeStrategy::kTensorParallel)
      for (std::int64_t i = 0; i < tokens; ++i)
        ++*std::min_element(after.begin(), after.end());
    return algo::extend_bytes(cache_.strategy(), comm_->world_size(),
                              comm_->rank(), cache_.batch(), n_heads_q,
                              cache_.kv_heads(), cache_.head_dim(), tokens,
                              dtype_size(cache_.dtype()), after);
  }

  const algo::KvCache &cache() const { return cache_; }

private:
  PyCommunicator *comm_;
  algo::KvCache cache_;
  algo::DecodeOptions options_;
};

} // namespace

void bind_decode(py::module_ &m) {
  py::class_<PyKvCache>(m, "KvCache")
      .def(py::init<PyCommunicator &, const std::string &, std::int64_t,
                    std::int64_t, std::int64_t, const std::string &,
                    std::int64_t, std::int64_t, std::optional<float>, int>(),
           py::arg("comm"), py::arg("strategy"), py::arg("batch"),
           py::arg("n_heads_kv"), py::arg("head_dim"), py::arg("dtype"),
           py::arg("capacity"), py::arg("window_left"), py::arg("scale"),
           py::arg("threads"),
           py::keep_alive<1, 2>()) // the cache refers to the communicator
      .def("prefill", &PyKvCache::prefill, py::arg("q"), py::arg("k"),
           py::arg("v"), py::arg("out"), py::arg("lse"), py::arg("layout"),
           py::arg("seqlen"))
      .def("extend", &PyKvCache::extend, py::arg("q"), py::arg("k"),
           py::arg("v"), py::arg("out"), py::arg("lse"))
      .def("extend_bytes", &PyKvCache::extend_bytes, py::arg("tokens"),
           py::arg("n_heads_q"))
      .def_property_readonly(
          "size", [](const PyKvCache &c) { return c.cache().size(); })
      .def_property_readonly(
          "local_size",
          [](const PyKvCache &c) { return c.cache().local_size(); })
      .def_property_readonly(
          "bytes", [](const PyKvCache &c) { return c.cache().bytes(); })
      .def_property_readonly(
          "local_positions",
          [](const PyKvCache &c) { return c.cache().local_positions(); })
      .def_property_readonly(
          "tokens_per_rank",
          [](const PyKvCache &c) { return c.cache().tokens_per_rank(); })
      .def_property_readonly(
          "first_kv_head",
          [](const PyKvCache &c) { return c.cache().first_kv_head(); })
      .def_property_readonly(
          "local_kv_heads",
          [](const PyKvCache &c) { return c.cache().local_kv_heads(); })
      .def_property_readonly(
          "next_owner",
          [](const PyKvCache &c) { return c.cache().next_owner(); })
      .def_property_readonly("strategy", [](const PyKvCache &c) {
        return algo::decode_strategy_name(c.cache().strategy());
      });
}

} // namespace burst::python
