// ProcessGroupNCCL construction, compiled only against a libtorch with
// CUDA (build.rs). CUDA is reached through torch's own wrappers
// (c10::cuda::set_device): the shim links no CUDA library itself, so the
// CUDA runtime and NCCL come only from libtorch_cuda.so's dependencies.
#include "dist.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

namespace selfsup {

c10::intrusive_ptr<c10d::Backend> make_nccl(
    const c10::intrusive_ptr<c10d::Store>& store,
    int rank,
    int world,
    int device,
    std::chrono::milliseconds timeout) {
  // One rank per GPU: NCCL refuses two ranks on one device.
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
  auto opts = c10d::ProcessGroupNCCL::Options::create();
  // Used by torch's NCCL watchdog: a collective that does not finish in
  // time (a rank died) ends the process instead of hanging it.
  opts->timeout = timeout;
  auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, opts);
  // Bind to the device now, as init_process_group(device_id=...) does, so
  // the communicator is created eagerly and its errors surface here.
  at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
  backend->setBoundDeviceId(dev);
  backend->eagerConnectSingleDevice(dev);
  return backend;
}

} // namespace selfsup
