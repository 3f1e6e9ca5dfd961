// Stub: see native/shim/gloo/README.md. c10d holds these only by pointer.
#pragma once

namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
} // namespace transport
} // namespace gloo
