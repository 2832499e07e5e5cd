// What each strategy of the registry (burst/strategy.h) needs, sends and holds: the one
// place of every feasibility rule, byte formula and memory formula of the strategies. The
// registry's entries point here; the strategies' own checks throw these messages.
#pragma once

#include <string>
#include <vector>

#include "burst/strategy.h"

namespace burst::algo::costs {

// Why a strategy cannot run (the registry's cannot_run), "" when it can.
std::string local_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
std::string any_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
std::string ring_rsa_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
std::string ulysses_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
std::string usp_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
std::string tp_cannot_run(const ProblemShape& shape, int ranks, const StrategyOptions& options, bool as_layer);
// Tensor parallelism's head split of the layer (tensor_parallel_heads throws it).
std::string tensor_parallel_reason(std::int64_t n_heads_q, std::int64_t n_heads_kv, int ranks);

// Bytes one rank sends (the registry's bytes).
StrategyBytes no_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                       const StrategyOptions& options);
StrategyBytes burst_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                          const StrategyOptions& options);
StrategyBytes ring_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                         const StrategyOptions& options);
StrategyBytes ring_rsa_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                             const StrategyOptions& options);
StrategyBytes ulysses_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                            const StrategyOptions& options);
StrategyBytes usp_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                        const StrategyOptions& options);
StrategyBytes allgather_bytes(const ProblemShape& shape, const std::vector<std::int64_t>& lengths, int rank,
                              const StrategyOptions& options);

// Buffers beyond the caller's tensors (the registry's workspace).
PassBytes local_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                          const StrategyOptions& options, const PassBytes& kernel);
PassBytes burst_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                          const StrategyOptions& options, const PassBytes& kernel);
PassBytes ring_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                         const StrategyOptions& options, const PassBytes& kernel);
PassBytes ring_rsa_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                             const StrategyOptions& options, const PassBytes& kernel);
PassBytes ulysses_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                            const StrategyOptions& options, const PassBytes& kernel);
PassBytes usp_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                        const StrategyOptions& options, const PassBytes& kernel);
PassBytes allgather_workspace(const ProblemShape& shape, const std::vector<std::int64_t>& lengths,
                              const StrategyOptions& options, const PassBytes& kernel);

// AttentionLayer's own collectives (the registry's layer_bytes).
StrategyBytes no_layer_bytes(std::int64_t row_floats, const std::vector<std::int64_t>& lengths, int rank);
StrategyBytes tp_v1_layer_bytes(std::int64_t row_floats, const std::vector<std::int64_t>& lengths, int rank);
StrategyBytes tp_v3_layer_bytes(std::int64_t row_floats, const std::vector<std::int64_t>& lengths, int rank);

// The caller's tensors of one rank (the registry's rank_memory).
PassBytes input_bytes(const ProblemShape& shape, double tokens);
PassBytes output_bytes(const ProblemShape& shape, double tokens);

}  // namespace burst::algo::costs
