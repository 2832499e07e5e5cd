// burst.plan: the library's cost model (burst/plan.h) for Python, a binding apart from the
// attention op's (module.cpp registers it with one call).
#pragma once

#include <pybind11/pybind11.h>

namespace burst::python {

// Adds `plan(...)`, `plan_clusters()` and `plan_models()` to the module.
void bind_plan(pybind11::module_& m);

}  // namespace burst::python
