// Errors raised at Burst's boundaries: one exception type whose message names the argument,
// the expected and the actual value.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace burst {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates the parts with operator<< and throws Error.
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  throw Error(os.str());
}

}  // namespace burst

// Throws burst::Error built from the remaining arguments when `cond` is false.
#define BURST_CHECK(cond, ...)        \
  do {                                \
    if (!(cond)) {                    \
      ::burst::fail(__VA_ARGS__);     \
    }                                 \
  } while (false)
