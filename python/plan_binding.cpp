#include "plan_binding.h"

#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "burst/error.h"
#include "burst/plan.h"

namespace py = pybind11;

namespace burst::python {
namespace {

py::dict prediction_dict(const plan::Prediction& p, bool recommended) {
  py::dict d;
  d["strategy"] = p.candidate.name();
  d["runs"] = p.runs();
  d["cannot_run"] = p.infeasible;
  d["out_of_memory"] = p.out_of_memory;
  d["recommended"] = recommended;
  d["forward_seconds"] = p.forward_seconds;
  d["backward_seconds"] = p.backward_seconds;
  d["seconds"] = p.seconds();
  d["compute_seconds"] = p.compute_seconds;
  d["comm_seconds"] = p.comm_seconds;
  d["exposed_seconds"] = p.exposed_seconds;
  d["forward_bytes_per_rank"] = p.forward_bytes;
  d["backward_bytes_per_rank"] = p.backward_bytes;
  d["inter_node_bytes_per_rank"] = p.inter_bytes;
  d["memory_bytes_per_rank"] = p.memory_bytes;
  return d;
}

// One dict per sequence length: its predictions (one per strategy) and the recommended name.
py::list plan_rows(const std::vector<std::int64_t>& seqlens, const std::string& cluster_name, const std::string& model_name,
                   std::optional<int> ranks, std::optional<int> nodes, std::int64_t batch, bool causal, bool backward,
                   const std::string& scope, const std::string& dtype,
                   const std::optional<std::vector<std::string>>& strategies, std::int64_t window_left,
                   std::int64_t window_right) {
  BURST_CHECK(!seqlens.empty(), "seqlens: expected at least one sequence length, got none");
  BURST_CHECK(batch >= 1, "batch: expected >= 1, got ", batch);
  const plan::ModelShape model = plan::model_preset(model_name, "model");
  plan::Cluster cluster = plan::cluster_preset(cluster_name, "cluster");
  const int n = nodes.value_or(cluster.nodes);
  cluster = plan::resize(cluster, n, ranks.value_or(nodes ? n * cluster.ranks_per_node : cluster.ranks()), "ranks");
  plan::Workload work = plan::make_workload(batch, causal, backward, plan::parse_scope(scope, "scope"),
                                            parse_dtype(dtype, "dtype"));
  work.window_left = window_left;
  work.window_right = window_right;
  const bool masked = causal || window_left >= 0 || window_right >= 0;
  std::vector<plan::Candidate> candidates = plan::candidates();
  if (strategies) {
    candidates.clear();
    for (const std::string& s : *strategies) {
      candidates.push_back(plan::parse_candidate(s, "strategies"));
      BURST_CHECK(masked || candidates.back().layout == algo::Layout::kZigzag, "strategies: ", s,
                  ": without a mask every layout gives every rank the same work; a layout needs causal=True or a window");
    }
  }
  std::vector<plan::Row> rows;
  {
    py::gil_scoped_release release;
    rows = plan::predict_all(cluster, model, work, seqlens, candidates);
  }
  py::list out;
  for (const plan::Row& row : rows) {
    py::dict r;
    r["seqlen"] = row.seqlen;
    r["recommended"] = row.best >= 0 ? row.predictions[static_cast<std::size_t>(row.best)].candidate.name() : "";
    py::list predictions;
    for (std::size_t i = 0; i < row.predictions.size(); ++i)
      predictions.append(prediction_dict(row.predictions[i], static_cast<int>(i) == row.best));
    r["strategies"] = predictions;
    out.append(r);
  }
  return out;
}

}  // namespace

void bind_plan(py::module_& m) {
  m.def("plan", &plan_rows, py::arg("seqlens"), py::arg("cluster"), py::arg("model"), py::arg("ranks"),
        py::arg("nodes"), py::arg("batch"), py::arg("causal"), py::arg("backward"), py::arg("scope"),
        py::arg("dtype"), py::arg("strategies"), py::arg("window_left"), py::arg("window_right"));
  m.def("plan_clusters", [] {
    std::vector<std::string> names;
    for (const std::string& n : plan::cluster_preset_names())
      if (n != "this") names.push_back(n);  // "this" needs a calibration file (burst plan --calibrate)
    return names;
  });
  m.def("plan_models", &plan::model_preset_names);
}

}  // namespace burst::python
