// `burst plan`: predicts time, traffic and memory per rank of every strategy for a described
// cluster and model shape, recommends one, and calibrates the model on this machine
// (the cost model and the measuring are the library's, burst/plan.h; plan_report.h prints,
// plan_calibration.h reads and writes calibration files).
#pragma once

#include <span>
#include <string>

namespace burst::cli {

// Runs `burst plan` with the arguments after "plan". Returns the exit status (0); throws
// burst::Error naming the flag on a bad argument.
int run_plan(std::span<char* const> args);

// Usage text of `burst plan` (generated from its flag table).
std::string plan_usage();

}  // namespace burst::cli
