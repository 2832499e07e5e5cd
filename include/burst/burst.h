// Everything a program needs from Burst (install: include/burst; link burst::burst, and
// burst::mpi for MPI ranks and run_world):
//   version.h          BURST_VERSION_STRING, burst::version()
//   error.h            burst::Error and its kinds, the exit statuses
//   dtype.h, tensor.h  fp32/bf16 storage; [b, s, h, d] tensors and [b, h, s] row statistics
//   kernels.h          the single-rank kernels: masks, options, forward, backward, merge
//   attention.h        single-rank calls that allocate their outputs
//   communicator.h     the Communicator interface: transfers with deadlines, collectives
//   world.h, local_world.h  ranks as threads (run_local_ranks) or MPI processes (run_world)
//   throttle.h         links slowed to a modelled rate, to emulate slow networks
//   layout.h           how tokens are sharded over ranks (contiguous, zigzag, striped,
//                      doc-zigzag, balanced)
//   documents.h        packed documents: lengths, boundaries, length distributions
//   burst_attention.h  BurstAttention's forward and backward over a communicator
//   strategy.h         every strategy in one table: forward, backward, bytes, memory, limits
//   plan.h             the cost model: time, bytes and memory per rank on a described cluster
//   linear.h, layer.h  the attention layer (projections, RoPE) under any strategy
//   decode.h           long-context inference: a sharded KV cache, prefill, decode steps
//   npy.h              .npy files
#pragma once

#include "burst/attention.h"
#include "burst/block.h"
#include "burst/burst_attention.h"
#include "burst/communicator.h"
#include "burst/decode.h"
#include "burst/documents.h"
#include "burst/dtype.h"
#include "burst/error.h"
#include "burst/kernels.h"
#include "burst/layer.h"
#include "burst/layout.h"
#include "burst/linear.h"
#include "burst/local_world.h"
#include "burst/npy.h"
#include "burst/plan.h"
#include "burst/strategy.h"
#include "burst/tensor.h"
#include "burst/throttle.h"
#include "burst/version.h"
#include "burst/world.h"
