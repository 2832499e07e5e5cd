// Bytes a rank sends over each class of link: to another rank of its own node (shared memory)
// and to a rank on another node (the network). Algorithms split their communicator (the
// double ring's intra- and inter-node rings, USP's groups), and each split keeps its own
// traffic table, so the CLI wraps the communicator it hands an algorithm: the wrapper and
// every communicator split from it count into one tally, classing each send by the nodes of
// its two ends. Sends to the rank itself cross no link and are in neither class.
#pragma once

#include <cstdint>
#include <memory>
#include <numeric>
#include <string_view>
#include <utility>
#include <vector>

#include "burst/communicator.h"

namespace burst::cli {

struct LinkBytes {
  std::uint64_t intra_node = 0, inter_node = 0;  // every operation
  // Point-to-point transfers only: an algorithm's own data movement (rings, hops), without
  // the collectives (argument checks, splits, all-to-alls, reductions).
  std::uint64_t intra_node_p2p = 0, inter_node_p2p = 0;
};

// Forwards every transfer to the wrapped communicator (same ranks, nodes, deadlines and
// messages) and counts the bytes it sends by link class.
class LinkCountingCommunicator final : public comm::Communicator {
 public:
  explicit LinkCountingCommunicator(comm::Communicator& inner)
      : LinkCountingCommunicator(inner, nullptr, std::make_shared<LinkBytes>()) {}

  // Sent by this rank through this communicator and its splits since the last reset.
  const LinkBytes& link_bytes() const { return *counts_; }
  void reset_link_bytes() { *counts_ = LinkBytes{}; }

  std::string_view backend() const override { return inner_->backend(); }
  std::unique_ptr<comm::Communicator> split(int color, int key) override {
    std::unique_ptr<comm::Communicator> child = inner_->split(color, key);
    if (!child) return nullptr;
    comm::Communicator& ref = *child;
    return std::unique_ptr<comm::Communicator>(new LinkCountingCommunicator(ref, std::move(child), counts_));
  }
  void progress() override { inner_->progress(); }

 protected:
  std::unique_ptr<comm::RequestState> post_send(const void* data, std::size_t bytes, int peer, int tag,
                                                bool /*collective*/, comm::TransferInfo info) override {
    const auto& nodes = node_of_rank();
    if (peer != rank()) {
      const bool intra = nodes[static_cast<std::size_t>(peer)] == nodes[static_cast<std::size_t>(rank())];
      (intra ? counts_->intra_node : counts_->inter_node) += bytes;
      if (info.op == comm::Op::kPointToPoint) (intra ? counts_->intra_node_p2p : counts_->inter_node_p2p) += bytes;
    }
    return std::make_unique<Forwarded>(info, inner_->isend(data, bytes, peer, tag, info.op));
  }
  std::unique_ptr<comm::RequestState> post_recv(void* data, std::size_t bytes, int peer, int tag,
                                                bool /*collective*/, comm::TransferInfo info) override {
    return std::make_unique<Forwarded>(info, inner_->irecv(data, bytes, peer, tag, info.op));
  }

 private:
  // A request of the wrapped communicator; a timeout there is reported by this one's wait,
  // with the same rank, peer, operation, tag and size.
  class Forwarded final : public comm::RequestState {
   public:
    Forwarded(comm::TransferInfo info, comm::Request inner) : RequestState(info), inner_(std::move(inner)) {}
    bool test() override { return inner_.test(); }
    bool wait_until(comm::Deadline deadline) override {
      try {
        inner_.wait(deadline);
        return true;
      } catch (const comm::TimeoutError&) {
        return false;
      }
    }
    void cancel() override { inner_ = comm::Request(); }

   private:
    comm::Request inner_;
  };

  LinkCountingCommunicator(comm::Communicator& inner, std::unique_ptr<comm::Communicator> owned,
                           std::shared_ptr<LinkBytes> counts)
      : Communicator(inner.rank(), inner.world_size()), inner_(&inner), owned_(std::move(owned)),
        counts_(std::move(counts)) {
    std::vector<int> same(static_cast<std::size_t>(inner.world_size()));
    std::iota(same.begin(), same.end(), 0);
    inherit_topology(inner, same);  // the wrapped communicator's nodes, as they are
    set_timeout(inner.timeout());
  }

  comm::Communicator* inner_;
  std::unique_ptr<comm::Communicator> owned_;  // set for communicators split from a wrapper
  std::shared_ptr<LinkBytes> counts_;
};

}  // namespace burst::cli
