// torch's c10d for selfsup: a TCPStore rendezvous, a ProcessGroup with the
// Gloo (CPU) or NCCL (CUDA) backend, the few collectives selfsup calls, an
// autograd all-gather, and c10d's own Reducer (the engine of PyTorch's
// DistributedDataParallel) driven from Rust. Only shipped c10d headers are
// included here; backends are built in dist_gloo.cpp and dist_nccl.cpp.
//
// Tensors cross as `at::Tensor*` (tch's C_tensor is a torch::Tensor*).
// Every function returns 0, or 1 with a message in (err, cap).
#include "dist.h"

#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <ATen/ATen.h>
#include <c10/util/Logging.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <vector>

struct SelfsupGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;
  c10::intrusive_ptr<c10d::Backend> backend;
  int rank;
  int world;
};

struct SelfsupDdp {
  std::unique_ptr<c10d::Reducer> reducer;
};

namespace {

// c10d's flight recorder (a trace of recent collectives, for debugging
// hangs) is on by default, and in libtorch 2.11 it adds each process
// group's status to a process-wide map outside its lock
// (FlightRecorder::recordWithResetEnabled): two groups of one process that
// start collectives at the same moment can corrupt that map. The cargo
// tests run two ranks as threads of one process and crashed there (SIGSEGV
// in std::_Rb_tree_insert_and_rebalance under ProcessGroupGloo::enqueue,
// about once in 60 runs under load). selfsup never dumps the trace, which
// also costs a stack capture per collective, so it is off unless the user
// sets its size. Done when the library loads, before selfsup starts any
// thread of its own.
[[maybe_unused]] const bool kFlightRecorderOff = [] {
  if (std::getenv("TORCH_FR_BUFFER_SIZE") == nullptr && std::getenv("TORCH_NCCL_TRACE_BUFFER_SIZE") == nullptr) {
    setenv("TORCH_FR_BUFFER_SIZE", "0", 0);
  }
  return true;
}();

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

SelfsupGroup* group_of(int64_t handle) {
  return reinterpret_cast<SelfsupGroup*>(handle);
}

// An all-gather along dim 0 whose backward is the reduce-scatter (sum) of
// the incoming gradient: every replica's loss reaches the rows it gathered
// from the others. torch's _c10d_functional_autograd all-gather aborts
// with Gloo when its input requires grad, hence this function. The group
// outlives every graph built on it (the trainer owns both, and a step's
// graph is freed before the next step), so it is saved as a raw handle.
struct AllGather : public torch::autograd::Function<AllGather> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t handle) {
    auto* g = group_of(handle);
    ctx->saved_data["group"] = handle;
    // The collective writes into views on Gloo's worker threads, where
    // grad mode is on: give it a tensor that does not require grad.
    auto input = x.detach().contiguous();
    auto sizes = input.sizes().vec();
    sizes[0] *= g->world;
    auto out = at::empty(sizes, input.options());
    g->backend->_allgather_base(out, input)->wait();
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto* g = group_of(ctx->saved_data["group"].toInt());
    auto grad = grads[0].contiguous();
    auto sizes = grad.sizes().vec();
    sizes[0] /= g->world;
    auto out = at::empty(sizes, grad.options());
    g->backend->_reduce_scatter_base(out, grad)->wait();
    return {out, at::Tensor()};
  }
};

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

std::vector<at::Tensor> tensors_of(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}

} // namespace

extern "C" {

// 1 when this shim can make NCCL process groups (built against libtorch_cuda).
int selfsup_dist_has_nccl() {
#ifdef SELFSUP_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// c10d logs every failed connection attempt, with a C++ backtrace, before
// it throws; selfsup reports the failure itself in one line. Unless the
// user asked for a level (TORCH_CPP_LOG_LEVEL, read by c10 at load), only
// fatal messages are printed.
void selfsup_dist_quiet_logs() {
  if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) FLAGS_caffe2_log_level = 3;
}

// Joins the process group: when `serve` (rank 0), serves a TCPStore on
// `port` (on the socket `listen_fd`, bound by the caller, when it is not
// -1; else on every interface, c10d's default) and waits for all `world`
// ranks; the others connect to host:port
// (under torchrun all ranks connect to its agent's store). Keys go under
// `prefix`. Then the backend (0: Gloo, 1: NCCL on CUDA device `device`)
// connects every pair. Both steps, and every later collective, fail after
// `timeout_ms`.
int selfsup_dist_group_new(
    const char* host,
    uint16_t port,
    int rank,
    int world,
    int serve,
    int listen_fd,
    const char* prefix,
    int backend,
    int device,
    int64_t timeout_ms,
    SelfsupGroup** out,
    char* err,
    size_t cap) {
  SELFSUP_TRY
  auto timeout = std::chrono::milliseconds(timeout_ms);
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = serve != 0;
  if (serve != 0 && listen_fd >= 0) opts.masterListenFd = listen_fd;
  opts.numWorkers = static_cast<size_t>(world);
  opts.waitWorkers = true;
  opts.timeout = timeout;
  // Not the libuv server: libtorch_cpu.so calls its bundled libuv through
  // exported uv_* symbols, and the Deno executable exports uv_* functions
  // of its own (Node-API compatibility), which win the dynamic symbol
  // lookup: the libuv daemon then crashes inside Deno. The classic
  // TCPStore server has no libuv.
  opts.useLibUV = false;
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
  // Keys of this group live under their own prefix, as torch.distributed's.
  c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
  auto g = std::make_unique<SelfsupGroup>();
  g->store = tcp;
  g->rank = rank;
  g->world = world;
  g->pg = c10::make_intrusive<c10d::ProcessGroup>(store, rank, world);
  if (backend == 1) {
#ifdef SELFSUP_WITH_NCCL
    at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    g->pg->setBoundDeviceId(dev);
    g->backend = selfsup::make_nccl(store, rank, world, device, timeout);
    g->pg->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL, g->backend);
    g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
#else
    (void)device;
    return selfsup::fail(err, cap, "this selfsup was built without CUDA: no NCCL process groups");
#endif
  } else {
    g->backend = selfsup::make_gloo(store, rank, world, timeout);
    g->pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, g->backend);
    g->pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
  }
  g->pg->setGroupName("0");
  *out = g.release();
  SELFSUP_CATCH(err, cap)
}

// Shuts the backend down (NCCL: destroys its communicators) and frees.
void selfsup_dist_group_free(SelfsupGroup* g) {
  if (g == nullptr) return;
  try {
    g->pg->shutdown();
  } catch (...) {
    // A peer that is gone already: nothing left to release cleanly.
  }
  delete g;
}

// In-place all-reduce (op 0 sum, 1 max, 2 min) of `n` tensors; blocks.
int selfsup_dist_all_reduce(SelfsupGroup* g, at::Tensor* const* ts, size_t n, int op, char* err, size_t cap) {
  SELFSUP_TRY
  auto v = tensors_of(ts, n);
  c10d::AllreduceOptions o;
  o.reduceOp = reduce_op(op);
  g->backend->allreduce(v, o)->wait();
  SELFSUP_CATCH(err, cap)
}

// Rank `root`'s values of `n` tensors, in place on every rank, packed in
// buckets of at most `bucket_bytes` (DDP's _broadcast_coalesced).
int selfsup_dist_broadcast(
    SelfsupGroup* g,
    at::Tensor* const* ts,
    size_t n,
    int root,
    int64_t bucket_bytes,
    char* err,
    size_t cap) {
  SELFSUP_TRY
  at::NoGradGuard no_grad;
  auto v = tensors_of(ts, n);
  c10d::broadcast_coalesced(g->pg, v, static_cast<size_t>(bucket_bytes), root);
  SELFSUP_CATCH(err, cap)
}

// `x` of every rank, concatenated along dim 0 in rank order; differentiable
// (backward: reduce-scatter of the gradient). The result goes to *out.
int selfsup_dist_all_gather(SelfsupGroup* g, const at::Tensor* x, at::Tensor** out, char* err, size_t cap) {
  SELFSUP_TRY
  auto y = AllGather::apply(*x, reinterpret_cast<int64_t>(g));
  *out = new at::Tensor(std::move(y));
  SELFSUP_CATCH(err, cap)
}

// c10d's Reducer over `n` parameters (the same order on every rank): it
// hooks their gradient accumulators, all-reduces gradients in buckets as
// they become ready during backward, and leaves the average in .grad.
// As DDP with find_unused_parameters=False: one bucket for the first
// step, then buckets of `bucket_bytes` (the first `first_bucket_bytes`)
// in the order gradients arrived.
int selfsup_ddp_new(
    SelfsupGroup* g,
    at::Tensor* const* params,
    const char* const* names,
    size_t n,
    int64_t bucket_bytes,
    int64_t first_bucket_bytes,
    SelfsupDdp** out,
    char* err,
    size_t cap) {
  SELFSUP_TRY
  auto v = tensors_of(params, n);
  std::vector<bool> sparse(n, false);
  auto [buckets, limits] = c10d::compute_bucket_assignment_by_size(
      v, {std::numeric_limits<size_t>::max()}, sparse);
  (void)limits;
  std::reverse(buckets.begin(), buckets.end());
  std::unordered_map<size_t, std::string> param_names;
  for (size_t i = 0; i < n; i++) param_names[i] = names[i];
  auto d = std::make_unique<SelfsupDdp>();
  d->reducer = std::make_unique<c10d::Reducer>(
      v,
      buckets,
      g->pg,
      sparse,
      bucket_bytes,
      /*find_unused_parameters=*/false,
      /*gradient_as_bucket_view=*/false,
      param_names,
      first_bucket_bytes,
      /*skip_all_reduce_unused_params=*/false,
      /*use_python_reducer=*/false,
      /*bucket_bytes_cap_list=*/std::vector<int64_t>{});
  *out = d.release();
  SELFSUP_CATCH(err, cap)
}

// What DDP's forward does first: after the first step, rebuild the buckets
// once in gradient-arrival order (a collective: every rank calls it at the
// same step); then mark the start of a forward. *rebuilt: 1 when rebuilt.
int selfsup_ddp_before_forward(SelfsupDdp* d, int* rebuilt, char* err, size_t cap) {
  SELFSUP_TRY
  d->reducer->prepare_for_forward();
  bool r = d->reducer->rebuild_buckets();
  if (rebuilt != nullptr) *rebuilt = r ? 1 : 0;
  SELFSUP_CATCH(err, cap)
}

// Arms the gradient hooks for the next backward of `loss`.
int selfsup_ddp_before_backward(SelfsupDdp* d, const at::Tensor* loss, char* err, size_t cap) {
  SELFSUP_TRY
  d->reducer->prepare_for_backward({*loss});
  SELFSUP_CATCH(err, cap)
}

// Sizes in bytes of the current buckets, in reduction order, into `bytes`
// (up to `max`); returns how many buckets there are, or -1 on error.
int64_t selfsup_ddp_buckets(SelfsupDdp* d, int64_t* bytes, size_t max) {
  try {
    auto buckets = d->reducer->get_grad_buckets(/*return_zero_tensors=*/true);
    for (size_t i = 0; i < buckets.size() && i < max; i++) {
      const auto& b = buckets[i].getBuffer();
      bytes[i] = static_cast<int64_t>(b.numel() * b.element_size());
    }
    return static_cast<int64_t>(buckets.size());
  } catch (...) {
    return -1;
  }
}

void selfsup_ddp_free(SelfsupDdp* d) {
  if (d == nullptr) return;
  // ~Reducer is noexcept(false) (it can complain after a failed backward):
  // destroy it inside a try, not from unique_ptr's noexcept destructor.
  c10d::Reducer* r = d->reducer.release();
  try {
    delete r;
  } catch (...) {
  }
  delete d;
}

} // extern "C"
