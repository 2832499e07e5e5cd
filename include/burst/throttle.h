// A communicator that makes links slower than they are, so communication-bound behaviour can
// be seen on one machine (this one moves ~10 GB/s through shared memory while two cores
// compute ~200 GFLOP/s: almost no strategy's traffic shows).
//
// Every send of a rank is held back until its link would have carried it: each rank has one
// outgoing link per class (to ranks of its own node, to ranks of other nodes), a send waits
// for the earlier sends on that link, takes bytes / rate, and arrives `latency` later. Only
// then is it handed to the wrapped communicator. A held send is released when the sender
// tests or waits on it, or calls progress() (the kernels do between tiles), so communication
// still overlaps compute as it would on a real link; progress_due() says when the next one is
// due, and the communicator's own waits sleep until then rather than poll. Receives are not touched: they complete
// when the released send arrives. Nodes come from the wrapped communicator
// (BURST_RANKS_PER_NODE); with a single node every link counts as inter-node, so a rate set
// for inter-node links slows every link.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

#include "burst/communicator.h"

namespace burst::comm {

struct LinkModel {
  double inter_node_bytes_per_second = 0;  // 0: as fast as the wrapped communicator
  double intra_node_bytes_per_second = 0;
  std::chrono::microseconds inter_node_latency{0};
  std::chrono::microseconds intra_node_latency{0};
  bool active() const {
    return inter_node_bytes_per_second > 0 || intra_node_bytes_per_second > 0 || inter_node_latency.count() > 0 ||
           intra_node_latency.count() > 0;
  }
};

// The model from BURST_LINK_GBPS (inter-node rate, Gbit/s), BURST_LINK_LATENCY_US,
// BURST_INTRA_GBPS and BURST_INTRA_LATENCY_US; unset variables leave a link as it is.
LinkModel link_model_from_environment();

// The network interfaces of the nodes, shared by the ranks of each node: with a fabric, a
// send between nodes takes bytes / inter_node_bytes_per_second on the sender's NIC (up) and
// on the receiver's NIC (down), as through a switch that queues per output port: it leaves
// when the up link is free, goes down when the down link is free, and arrives
// inter_node_latency after it ends. A node has `nics_per_node` NICs; its i-th rank uses NIC
// i % nics_per_node. One NIC per node: the node's ranks share its rate each way (a CPU
// cluster); one per rank: a NIC of its own for every rank (GPU nodes with a NIC per GPU).
// Ranks use one fabric only when they share the process (in-process ranks: make one and give
// it to every rank's throttled()); MPI ranks each model their own link. With a single node
// every link counts as inter-node and the fabric is not used.
class Fabric;
std::shared_ptr<Fabric> make_fabric(int nodes, int nics_per_node = 1);

// Wraps `inner` (which must outlive it); communicators split from it are throttled alike.
// With a fabric, inter-node sends go through the nodes' shared NICs (above).
std::unique_ptr<Communicator> throttled(Communicator& inner, const LinkModel& model,
                                        std::shared_ptr<Fabric> fabric = nullptr);

}  // namespace burst::comm
