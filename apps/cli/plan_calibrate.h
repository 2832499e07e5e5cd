// `burst plan --calibrate`: measures this machine (kernel and GEMM FLOP/s of one thread, memory
// bandwidth, and the communicator's bandwidth and latency) and turns the figures into the
// cluster "this" of the cost model.
#pragma once

#include <ostream>
#include <string>

#include "burst/dtype.h"
#include "plan_model.h"

namespace burst::cli::plan {

struct Calibration {
  // One core's rate while every core runs the same measurement (one thread each), counted
  // FLOPs (plan_model.h): attention kernels on 2 heads x 4096 tokens,
  // d = 128, no mask; fp32 sgemm-based projections.
  double attention_forward_f32 = 0, attention_backward_f32 = 0;
  double attention_forward_bf16 = 0, attention_backward_bf16 = 0;
  // The same with a causal mask (FLOPs counted at the visible fraction): masked diagonal
  // tiles run slower than full ones. 0: not measured (older files), use the rates above.
  double attention_forward_f32_causal = 0, attention_backward_f32_causal = 0;
  double attention_forward_bf16_causal = 0, attention_backward_bf16_causal = 0;
  double gemm_f32 = 0;
  double memory_bandwidth = 0;  // bytes/s of one core copying 256 MiB (read + write), all copying
  // A ring step between two ranks of the communicator burst run would use here: threads of
  // this process, or MPI ranks under mpirun.
  std::string link_backend;
  double link_bandwidth = 0;  // bytes/s, 64 MiB messages
  double link_latency = 0;    // seconds, 8-byte messages
  int cores = 1;              // hardware threads
  double memory_bytes = 0;    // MemAvailable when measured
  std::string measured_at;    // UTC time
};

// Measures everything, printing progress lines to `log`. Under mpirun every process must call
// it (the link is measured between MPI ranks 0 and 1); `root` says whether this process is
// rank 0 (the one that should report and save).
Calibration calibrate(std::ostream& log, bool& root);

// The calibration as the JSON text load_calibration reads.
std::string calibration_json(const Calibration& c);
// Writes calibration_json(c) to `path` (all or nothing, output.h).
void save_calibration(const std::string& path, const Calibration& c);
// Throws burst::Error naming `what` when the file is missing or malformed.
Calibration load_calibration(const std::string& path, const std::string& what);

// The cluster "this": one node of `ranks` ranks sharing the measured cores, as burst run
// places them (threads per rank = cores / ranks, at least one).
Cluster cluster_from_calibration(const Calibration& c, int ranks, DType dtype);

}  // namespace burst::cli::plan
