// `burst decode`: long-context inference over a KV cache sharded across the ranks.
#pragma once

#include <span>
#include <string>

namespace burst::cli {

// Returns the exit status (0 verified, 1 over tolerance or bytes unlike their formula);
// throws burst::Error on bad arguments.
int run_decode(std::span<char* const> args);
std::string decode_usage();

}  // namespace burst::cli
