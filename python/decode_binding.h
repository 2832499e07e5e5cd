// burst.KvCache: the library's sharded KV cache and its prefill / extend calls
// (burst/decode.h) for Python, a binding apart from the attention op's
// (module.cpp registers it with one call).
#pragma once

#include <pybind11/pybind11.h>

namespace burst::python {

// Adds the class `KvCache` to the module (after `Communicator`, whose objects
// it takes).
void bind_decode(pybind11::module_ &m);

} // namespace burst::python
