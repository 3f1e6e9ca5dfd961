// Stub: see native/shim/gloo/README.md. ProcessGroupGloo::setTimeout (inline)
// calls Context::setTimeout, defined in libtorch_cpu.so's bundled gloo.
#pragma once
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
} // namespace gloo
