// What the distributed translation units share (C++ linkage, internal to
// the shim). dist_core.cpp holds the C ABI; dist_gloo.cpp and dist_nccl.cpp
// only construct their backend, so that gloo's stub headers and the CUDA
// headers each stay inside one file.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <string>

namespace selfsup {

// ProcessGroupGloo over `store`: one TCP device (GLOO_SOCKET_IFNAME's
// interface when set, else the address this host's name resolves to, else
// loopback), collectives failing after `timeout`.
c10::intrusive_ptr<c10d::Backend> make_gloo(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    std::chrono::milliseconds timeout);

// ProcessGroupNCCL over `store`, bound to CUDA device `device` (made the
// calling thread's current device first). Defined only when the shim is
// built against a libtorch with CUDA (build.rs: SELFSUP_WITH_NCCL).
c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    int device,
    std::chrono::milliseconds timeout);

// Copies `msg` (NUL-terminated, truncated to `cap`) for the Rust side;
// returns 1, the shim's error status.
inline int fail(char* err, size_t cap, const char* msg) {
  if (err != nullptr && cap > 0) {
    std::strncpy(err, msg, cap - 1);
    err[cap - 1] = '\0';
  }
  return 1;
}

} // namespace selfsup

// Every extern "C" function of the shim returns 0, or 1 with a message in
// (err, cap): no C++ exception may cross into Rust.
#define SELFSUP_TRY try {
#define SELFSUP_CATCH(err, cap)                                  \
  }                                                              \
  catch (const std::exception& e) {                              \
    return selfsup::fail(err, cap, e.what());                    \
  }                                                              \
  catch (...) {                                                  \
    return selfsup::fail(err, cap, "unknown C++ exception");     \
  }                                                              \
  return 0;
