#include "burst/version.h"

namespace burst {

const char* version() noexcept { return BURST_VERSION_STRING; }

}  // namespace burst
