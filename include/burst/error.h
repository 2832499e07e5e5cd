// Errors raised at Burst's boundaries: one exception family whose messages name the argument,
// the expected and the actual value, and the exit statuses every front end maps them to.
#pragma once

#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace burst {

// What went wrong, so front ends can map errors to exit statuses (and Python to exception
// types) without parsing messages.
enum class ErrorKind {
  kInput,          // bad arguments or input files, found before any compute
  kCommunication,  // a deadline, a lost peer, ranks that disagree (comm::CommError)
  kOutput,         // a result could not be written (full disk, I/O error)
};

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  virtual ErrorKind kind() const noexcept { return ErrorKind::kInput; }
};

// A result file or report that could not be written completely.
class OutputError : public Error {
 public:
  using Error::Error;
  ErrorKind kind() const noexcept override { return ErrorKind::kOutput; }
};

// Exit statuses of the `burst` command, the same in-process and under an MPI launcher (an
// MPI rank that fails aborts the job with the status of its error).
enum ExitStatus : int {
  kExitOk = 0,             // ran and verified
  kExitOverTolerance = 1,  // ran, but an error exceeds the tolerance
  kExitBadInput = 2,       // bad arguments or input files (found before compute)
  kExitCommunication = 3,  // communication failure: deadline, lost peer, ranks disagree
  kExitOther = 4,          // anything else (a failed write, an unexpected exception)
};

// The exit status that reports `e`.
inline int exit_status_of(const std::exception& e) noexcept {
  const auto* error = dynamic_cast<const Error*>(&e);
  if (error == nullptr) return kExitOther;
  switch (error->kind()) {
    case ErrorKind::kInput: return kExitBadInput;
    case ErrorKind::kCommunication: return kExitCommunication;
    case ErrorKind::kOutput: return kExitOther;
  }
  return kExitOther;
}

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
