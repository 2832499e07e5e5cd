#include "burst/dtype.h"

#include "burst/error.h"

namespace burst {

DType parse_dtype(std::string_view text, std::string_view what) {
  if (text == "fp32") return DType::kF32;
  if (text == "bf16") return DType::kBF16;
  fail(what, ": expected fp32 or bf16, got '", text, "'");
}

}  // namespace burst
