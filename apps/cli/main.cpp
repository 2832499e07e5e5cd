// burst: the command-line program. `burst run` times exact local attention on one problem
// (random or read from .npy files) and checks it against the double-precision reference.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <iostream>
#include <cstdlib>
#include <initializer_list>
#include <span>
#include <thread>
#include <string_view>
#include <vector>

#include "burst/attention.h"
#include "burst/documents.h"
#include "args.h"
#include "bench_cmd.h"
#include "decode_cmd.h"
#include "plan.h"
#include "burst/world.h"
#include "distributed.h"
#include "block_run.h"
#include "layer_run.h"
#include "memory.h"
#include "output.h"
#include "burst/version.h"
#include "progress.h"
#include "burst/error.h"
#include "kernels/blas.h"
#include "problem.h"
#include "report.h"
#include "verify.h"

namespace burst::cli {
namespace {

// fp32 results carry fp32 rounding only; bf16 outputs add one rounding of 2^-8 relative, which
// also reaches the gradients through delta = rowsum(dO * O) of the bf16 O.
constexpr double kToleranceF32 = 1e-4;
constexpr double kToleranceBF16 = 1e-2;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Runs fn `repeat` times and returns the median wall time in seconds; the bar shows each
// run against the previous one's time (the first against `estimate`).
template <class Fn>
double time_median(int repeat, ProgressBar& bar, const std::string& pass, double estimate, Fn&& fn) {
  std::vector<double> seconds;
  for (int i = 0; i < repeat; ++i) {
    bar.begin(pass + " " + std::to_string(i + 1) + "/" + std::to_string(repeat), seconds.empty() ? estimate : seconds.back());
    const auto start = std::chrono::steady_clock::now();
    fn();
    bar.end();
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    seconds.push_back(took.count());
  }
  return median(seconds);
}

Report describe(const RunArgs& args, const Problem& p) {
  Report r;
  r.batch = p.batch();
  r.seqlen_q = p.seqlen_q();
  r.seqlen_k = p.seqlen_k();
  r.heads = p.heads();
  r.kv_heads = p.kv_heads();
  r.head_dim = p.head_dim();
  r.dtype = std::string(dtype_name(p.dtype()));
  r.causal = args.causal;
  if (args.has_window()) r.window = {{args.window_left, args.window_right}};
  r.scale = p.options.scale ? static_cast<double>(*p.options.scale)
                            : 1.0 / std::sqrt(static_cast<double>(p.head_dim()));
  r.input = p.from_files ? "npy" : "random";
  r.seed = args.seed;
  r.threads = args.threads;
  r.isa = kernels::isa_name(kernels::resolve_isa(args.isa));
  r.blas_core = kernels::blas_info().core;
  r.repeat = args.repeat;
  if (!p.documents.empty()) {
    const std::vector<std::int64_t> lengths = algo::document_lengths(p.documents);
    r.documents = static_cast<std::int64_t>(lengths.size());
    r.longest_document = *std::max_element(lengths.begin(), lengths.end());
    r.documents_source = !args.doc_lens.empty()        ? "--doc-lens"
                         : !args.doc_lens_path.empty() ? "--doc-lens-from " + args.doc_lens_path
                                                       : "--doc-dist " + args.doc_dist + " (seed " + std::to_string(args.seed) + ")";
    r.document_work_ratio = algo::document_work_ratio(p.options.mask, p.seqlen_k());
  }
  r.visible_fraction = kernels::visible_fraction(p.seqlen_q(), p.seqlen_k(), p.options);
  r.forward_flops = 4.0 * static_cast<double>(p.batch()) * static_cast<double>(p.heads()) *
                    static_cast<double>(p.seqlen_q()) * static_cast<double>(p.seqlen_k()) *
                    static_cast<double>(p.head_dim()) * r.visible_fraction;
  // A bf16 gradient wire rounds the gradients' partial sums like bf16 storage rounds the
  // inputs; the forward does not see it.
  const bool bf16_wire = args.strategy != algo::Strategy::kLocal && args.grad_wire == DType::kBF16;
  r.tolerance = p.dtype() == DType::kBF16 ? kToleranceBF16 : kToleranceF32;
  r.gradient_tolerance = bf16_wire ? kToleranceBF16 : r.tolerance;
  return r;
}

// Ranks of the run and how many of them (in how many processes) share this machine, known
// before any communicator exists: from the flags, or from the MPI launcher's environment.
struct Placement {
  int ranks = 1, ranks_here = 1, processes_here = 1;
};
Placement placement(const RunArgs& args) {
  auto env_int = [](std::initializer_list<const char*> names) {
    for (const char* name : names)
      if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
    return 0;
  };
  const int hardware = std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  Placement p;
  if (args.strategy == algo::Strategy::kLocal) return p;
  if (comm::launched_by_mpi()) {
    p.ranks = std::max(1, env_int({"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"}));
    p.ranks_here = std::max(1, env_int({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}));
    if (p.ranks_here == 1 && p.ranks > 1 && env_int({"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"}) == 0)
      p.ranks_here = p.ranks;  // unknown: assume one host
    p.processes_here = p.ranks_here;
  } else {
    p.ranks = args.ranks > 0 ? args.ranks : hardware;
    p.ranks_here = p.ranks;
  }
  return p;
}

// Checks every output path of the run before anything is computed (see output.h).
void expect_outputs(const RunArgs& args, Outputs& outputs) {
  if (!args.save_dir.empty()) {
    std::vector<std::string> names;
    if (args.block) {
      names = {"y.npy"};
      if (args.backward) names.emplace_back("dx.npy");
    } else if (args.layer) {
      names = {"y.npy"};
      if (args.backward) names.insert(names.end(), {"dx.npy", "dwq.npy", "dwk.npy", "dwv.npy", "dwo.npy"});
    } else {
      names = {"o.npy", "lse.npy"};
      if (args.backward) names.insert(names.end(), {"dq.npy", "dk.npy", "dv.npy"});
    }
    outputs.expect_dir("--save", args.save_dir, names);
    if (args.block && args.backward) expect_block_outputs(outputs, args);  // DIR/layer{i}/ gradients
  }
  if (!args.json_path.empty()) outputs.expect_file("--json", args.json_path);
}

int run(const RunArgs& args) {
  Outputs outputs(comm::launcher_rank() == 0);  // rank 0 writes; every rank checks the paths
  expect_outputs(args, outputs);
  const Placement where = placement(args);
  const MemoryEstimate estimate = estimate_memory(args, where.ranks, where.ranks_here, where.processes_here);
  check_memory(args, estimate);  // before any large allocation
  if (args.block) return run_block(args, estimate, outputs);
  if (args.layer) return run_layer(args, estimate.this_machine, outputs);
  BURST_CHECK(!algo::layer_only(args.strategy), "--strategy: ", algo::strategy_name(args.strategy),
              " shards the layer's weights by heads, so it needs --layer (or --block)");
  BURST_CHECK(args.x_path.empty() && args.weights_dir.empty() && !args.model_dim && args.rope_base == 10000.0,
              "--x, --weights, --model-dim and --rope-base describe the layer: add --layer (or --block)");
  const Problem p = make_problem(args);
  Report report = describe(args, p);  // resolves isa and loads BLAS before any timing
  report.memory_estimate_mb = estimate.this_machine / 1e6;

  ForwardOutputs fwd;
  Gradients grads;
  if (args.strategy != algo::Strategy::kLocal) {
    DistributedResult dr = run_burst(args, p);
    if (!dr.root) return kExitOk;  // an MPI rank other than 0: rank 0 reports
    fwd = std::move(dr.fwd);
    grads = std::move(dr.grads);
    report.forward_seconds = dr.forward_seconds;
    report.backward_seconds = dr.backward_seconds;
    report.distributed = dr.figures;
    report.threads = dr.figures.threads_per_rank;
  } else {
    BURST_CHECK(args.ranks == 0 || args.ranks == 1, "--ranks: strategy local runs on one rank, got ", args.ranks,
                " (use --strategy burst)");
    ProgressBar bar(ProgressBar::wanted(args.progress));
    report.forward_seconds = time_median(args.repeat, bar, "forward", report.forward_flops / (80e9 * args.threads), [&] {
      fwd = {};  // the previous repetition's outputs go before the next allocates its own
      fwd = attention_forward(p.q.view(), p.k.view(), p.v.view(), p.options, p.dtype());
    });
    if (p.backward) {
      report.backward_seconds = time_median(args.repeat, bar, "backward", report.backward_flops() / (60e9 * args.threads), [&] {
        grads = {};
        grads = attention_backward(p.q.view(), p.k.view(), p.v.view(), fwd.out.view(),
                                   fwd.lse.view(), p.dout.view(), p.options);
      });
    }
  }
  // Memory peaks of the computation: taken before saving and verifying, which allocate too.
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  report.peak_rss_mb = static_cast<double>(usage.ru_maxrss) / 1024.0;  // kB on Linux
  report.peak_alloc_mb = static_cast<double>(memory_stats().peak) / 1e6;
  report.memory_scope = comm::launched_by_mpi() && args.strategy != algo::Strategy::kLocal ? "rank" : "process";
  if (!args.save_dir.empty()) save_outputs(outputs, args.save_dir, fwd, p.backward ? &grads : nullptr);

  if (args.emulate) {
    report.emulated = std::pair{args.emulate->forward_flops, args.emulate->backward_flops};
    print_table(std::cout, report);
    if (!args.json_path.empty()) outputs.write_text(args.json_path, report_json(report));
    outputs.commit();
    return kExitOk;
  }
  const ForwardCheck fc = check_forward(p, fwd, args.threads);
  report.verified_rows = fc.rows;
  report.errors.push_back({"o", fc.o_error});
  report.lse_error = fc.lse_error;
  if (p.backward && backward_checkable(p)) {
    for (const TensorError& e : check_backward(p, grads, args.threads)) report.errors.push_back(e);
    report.backward_verified = true;
  } else if (p.backward) {
    for (const TensorError& e : check_backward_sampled(p, grads, args.threads)) report.errors.push_back(e);
    report.backward_sampled = true;
  }

  print_table(std::cout, report);
  if (!args.json_path.empty()) outputs.write_text(args.json_path, report_json(report));
  outputs.commit();  // results over tolerance are results too: they are kept
  const std::vector<TensorError> failures = report.failures();
  if (failures.empty()) return kExitOk;
  std::cerr << "burst: FAILED:";
  for (const TensorError& e : failures) {
    std::cerr << " " << e.name << " relative error " << e.error << ";";
  }
  std::cerr << " tolerance " << report.tolerance;
  if (report.gradient_tolerance != report.tolerance) std::cerr << " (gradients " << report.gradient_tolerance << ")";
  std::cerr << "\n";
  return kExitOverTolerance;
}

int run_main(std::span<char* const> args) {
  if (args.empty()) {
    std::cerr << top_usage();
    return kExitBadInput;
  }
  const std::string_view command = args[0];
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << top_usage() << "\n" << run_usage();
    return kExitOk;
  }
  if (command == "--version" || command == "version") {
    std::cout << "burst " << burst::version() << "\n";
    return kExitOk;
  }
  if (command == "bench") return run_bench(args.subspan(1));
  if (command == "decode") return run_decode(args.subspan(1));
  if (command == "plan") return run_plan(args.subspan(1));
  BURST_CHECK(command == "run", "command: expected run, bench, plan or decode (see burst --help), got '", command, "'");
  const RunArgs run_args = parse_run_args(args.subspan(1));
  if (run_args.help) {
    std::cout << run_usage();
    return kExitOk;
  }
  return run(run_args);
}

}  // namespace
}  // namespace burst::cli

int main(int argc, char** argv) {
  // Each error's kind picks the exit status (burst/error.h): bad input 2, communication 3,
  // anything else 4.
  const auto n_args = static_cast<std::size_t>(argc > 0 ? argc - 1 : 0);
  // Each error is one write: under mpirun every rank may print it to the shared stderr.
  auto report = [](const char* what) {
    const std::string line = std::string("burst: error: ") + what + "\n";
    (void)!::write(STDERR_FILENO, line.data(), line.size());
  };
  try {
    return burst::cli::run_main(std::span<char* const>(argv + 1, n_args));
  } catch (const std::exception& e) {
    report(e.what());
    return burst::exit_status_of(e);
  }
}
