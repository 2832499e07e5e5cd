// BurstAttention from C++: causal attention over 4 ranks, forward and backward, checked
// against the single-rank kernel. Thread ranks by default; under mpirun, MPI ranks:
//   ./burst_example      or      mpirun -np 4 ./burst_example
#include <burst/burst.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>

using namespace burst;

// Seeded normal values: every rank builds the same global inputs.
Tensor random_tensor(std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d, unsigned seed) {
  Tensor t(DType::kF32, b, s, h, d);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::generate_n(t.data<float>(), t.view().numel(), [&] { return normal(rng); });
  return t;
}

// Largest |shard - global rows at positions|, relative to the largest |global|.
double error(const Tensor& shard, const Tensor& global, const std::vector<std::int64_t>& positions) {
  Tensor want(DType::kF32, global.view().b, static_cast<std::int64_t>(positions.size()), global.view().h,
              global.view().d);
  algo::copy_to_shard(global.view(), positions, want.view());
  double diff = 0, scale = 0;
  for (std::int64_t i = 0; i < want.view().numel(); ++i) {
    diff = std::max(diff, static_cast<double>(std::abs(shard.data<float>()[i] - want.data<float>()[i])));
    scale = std::max(scale, static_cast<double>(std::abs(want.data<float>()[i])));
  }
  return diff / scale;
}

int main() {
  const std::int64_t b = 1, n = 2048, heads = 8, kv_heads = 2, d = 64;
  const Tensor q = random_tensor(b, n, heads, d, 1), k = random_tensor(b, n, kv_heads, d, 2),
               v = random_tensor(b, n, kv_heads, d, 3), dout = random_tensor(b, n, heads, d, 4);

  // The single-rank kernel on the whole sequence: what the ranks must reproduce.
  kernels::AttentionOptions local;
  local.mask.causal = true;
  const ForwardOutputs want = attention_forward(q.view(), k.view(), v.view(), local, DType::kF32);
  const Gradients want_grads =
      attention_backward(q.view(), k.view(), v.view(), want.out.view(), want.lse.view(), dout.view(), local);

  int status = 0;
  comm::run_world(4, [&](comm::Communicator& comm) {
    algo::BurstOptions options;
    options.seqlen = n;
    options.layout = algo::Layout::kZigzag;  // balances the causal work
    options.mask.causal = true;
    // This rank's tokens, and its shards of the inputs (b, n, h, d) -> (b, n_r, h, d).
    const std::vector<std::int64_t> mine = algo::shard_positions(n, comm.world_size(), comm.rank(), options.layout);
    const auto n_r = static_cast<std::int64_t>(mine.size());
    auto shard = [&](const Tensor& global) {
      Tensor s(DType::kF32, b, n_r, global.view().h, d);
      algo::copy_to_shard(global.view(), mine, s.view());
      return s;
    };
    const Tensor q_r = shard(q), k_r = shard(k), v_r = shard(v), dout_r = shard(dout);
    Tensor out(DType::kF32, b, n_r, heads, d), dq(DType::kF32, b, n_r, heads, d),
        dk(DType::kF32, b, n_r, kv_heads, d), dv(DType::kF32, b, n_r, kv_heads, d);
    RowStats lse(b, heads, n_r);

    algo::burst_forward(comm, q_r.view(), k_r.view(), v_r.view(), out.view(), lse.view(), options);
    algo::burst_backward(comm, q_r.view(), k_r.view(), v_r.view(), out.view(), lse.view(), dout_r.view(), dq.view(),
                         dk.view(), dv.view(), options);

    const double worst = std::max({error(out, want.out, mine), error(dq, want_grads.dq, mine),
                                   error(dk, want_grads.dk, mine), error(dv, want_grads.dv, mine)});
    std::printf("rank %d of %d (%s): %lld tokens, largest error against one rank %.2e\n", comm.rank(),
                comm.world_size(), std::string(comm.backend()).c_str(), static_cast<long long>(n_r), worst);
    if (!(worst <= 1e-4)) status = 1;
  });
  return status;
}
