#include "burst/strategy.h"

#include "algo/allgather.h"
#include "algo/ring_rsa.h"
#include "algo/ulysses.h"
#include "algo/usp.h"
#include "burst/error.h"

namespace burst::algo {

std::string strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::kBurst: return "burst";
    case Strategy::kRing: return "ring";
    case Strategy::kAllGather: return "allgather";
    case Strategy::kUlysses: return "ulysses";
    case Strategy::kRingRsa: return "ring-rsa";
    case Strategy::kUsp: return "usp";
    case Strategy::kTpV1: return "tp-v1";
    case Strategy::kTpV3: return "tp-v3";
  }
  return "?";
}

Strategy parse_strategy(const std::string& text, const std::string& what) {
  for (Strategy s : {Strategy::kBurst, Strategy::kRing, Strategy::kAllGather, Strategy::kUlysses, Strategy::kRingRsa,
                     Strategy::kUsp, Strategy::kTpV1, Strategy::kTpV3}) {
    if (text == strategy_name(s)) return s;
  }
  fail(what, ": expected burst, ring, allgather, ulysses, ring-rsa, usp, tp-v1 or tp-v3, got '", text, "'");
}

bool layer_only(Strategy strategy) { return strategy == Strategy::kTpV1 || strategy == Strategy::kTpV3; }

namespace {
void refuse_layer_only(Strategy strategy) {
  BURST_CHECK(!layer_only(strategy), "strategy ", strategy_name(strategy),
              " shards the layer's weights by heads, so it runs only as a layer (AttentionLayer; burst run --layer)");
}
}  // namespace

RingStats strategy_forward(Strategy strategy, comm::Communicator& comm, const TensorView& q, const TensorView& k,
                           const TensorView& v, const TensorView& out, const RowStatsView& lse,
                           const BurstOptions& options) {
  refuse_layer_only(strategy);
  if (strategy == Strategy::kAllGather) return allgather_forward(comm, q, k, v, out, lse, options);
  if (strategy == Strategy::kUlysses) return ulysses_forward(comm, q, k, v, out, lse, options);
  if (strategy == Strategy::kRingRsa) return ring_rsa_forward(comm, q, k, v, out, lse, options);
  if (strategy == Strategy::kUsp) return usp_forward(comm, q, k, v, out, lse, options);
  return burst_forward(comm, q, k, v, out, lse, options);
}

RingStats strategy_backward(Strategy strategy, comm::Communicator& comm, const TensorView& q, const TensorView& k,
                            const TensorView& v, const TensorView& out, const RowStatsView& lse,
                            const TensorView& dout, const TensorView& dq, const TensorView& dk, const TensorView& dv,
                            const BurstOptions& options) {
  refuse_layer_only(strategy);
  switch (strategy) {
    case Strategy::kAllGather:
      return allgather_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
    case Strategy::kUlysses:
      return ulysses_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
    case Strategy::kRingRsa:
      return ring_rsa_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
    case Strategy::kUsp:
      return usp_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
    case Strategy::kRing: {
      BurstOptions ring = options;
      ring.backward_scheme = BackwardScheme::kKeyValue;
      return burst_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, ring);
    }
    case Strategy::kBurst:
    case Strategy::kTpV1:
    case Strategy::kTpV3:
      break;
  }
  return burst_backward(comm, q, k, v, out, lse, dout, dq, dk, dv, options);
}

}  // namespace burst::algo
