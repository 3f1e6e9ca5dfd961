// C++ helpers for what tch does not bind. Every function is noexcept from
// the caller's view: exceptions are caught here.
#include <torch/version.h>

extern "C" const char* selfsup_shim_torch_version() { return TORCH_VERSION; }
