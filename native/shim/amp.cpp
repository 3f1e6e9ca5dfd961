// Mixed precision and the multi-tensor fast paths of a training step, for
// what tch 0.24 does not bind: autocast with a chosen dtype on CPU or CUDA,
// the GradScaler's multi-tensor unscale, torch.optim's fused and foreach
// updates, and channels_last. Callers (native/src/amp.rs, optim.rs) run on
// a trainer's owning thread: autocast state is thread-local in libtorch.
//
// Tensors cross as `at::Tensor*` (tch's C_tensor is a torch::Tensor*).
// Every function returns 0, or 1 with a message in (err, cap).
#include <ATen/ATen.h>
#include <ATen/Version.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <cstddef>
#include <cstring>
#include <optional>
#include <vector>

namespace {

int fail(char* err, size_t cap, const char* msg) {
  if (err != nullptr && cap > 0) {
    std::strncpy(err, msg, cap - 1);
    err[cap - 1] = '\0';
  }
  return 1;
}

std::vector<at::Tensor> list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; i++) v.push_back(*ts[i]);
  return v;
}

at::DeviceType device_type(int cuda) {
  return cuda ? at::kCUDA : at::kCPU;
}

std::optional<at::Tensor> maybe(const at::Tensor* t) {
  if (t == nullptr) return std::nullopt;
  return *t;
}

} // namespace

#define AMP_TRY try {
#define AMP_CATCH(err, cap)                            \
  }                                                    \
  catch (const std::exception& e) {                    \
    return fail(err, cap, e.what());                   \
  }                                                    \
  catch (...) {                                        \
    return fail(err, cap, "unknown C++ exception");    \
  }                                                    \
  return 0;

extern "C" {

// Enters an autocast region on this thread for CPU (cuda 0) or CUDA
// (cuda 1), enabled with ScalarType `dtype` (Half or BFloat16) or
// disabled (a full-precision island inside a region), as
// torch.autocast(...).__enter__ does; the previous state goes to the out
// pointers for selfsup_autocast_exit.
int selfsup_autocast_enter(int cuda, int enabled, int dtype, int* prev_enabled, int* prev_dtype, char* err, size_t cap) {
  AMP_TRY
  auto dev = device_type(cuda);
  *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
  *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
  if (enabled) at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
  at::autocast::set_autocast_enabled(dev, enabled != 0);
  at::autocast::increment_nesting();
  AMP_CATCH(err, cap)
}

// Leaves the region: the previous state back, and the cache of
// lower-precision weight copies emptied when the outermost region ends
// (torch.autocast.__exit__), so that the next step casts the updated
// weights afresh.
int selfsup_autocast_exit(int cuda, int prev_enabled, int prev_dtype, char* err, size_t cap) {
  AMP_TRY
  auto dev = device_type(cuda);
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
  at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
  AMP_CATCH(err, cap)
}

// This thread's autocast state for a device type (tests).
int selfsup_autocast_state(int cuda, int* enabled, int* dtype) {
  auto dev = device_type(cuda);
  *enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
  *dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
  return 0;
}

// GradScaler.unscale_: every gradient multiplied by `inv_scale` in place,
// `found_inf` set to 1 if any holds an inf or NaN (one multi-tensor kernel
// per device and dtype on CUDA, no host synchronisation).
int selfsup_amp_unscale(at::Tensor* const* grads, size_t n, at::Tensor* found_inf, const at::Tensor* inv_scale, char* err, size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
  AMP_CATCH(err, cap)
}

// optimizer.zero_grad(set_to_none=True), torch's default: the gradients
// are dropped, so the next backward hands each parameter its fresh
// gradient instead of adding it to a zeroed one (no memset, no extra
// read-modify-write pass over every gradient).
int selfsup_grads_set_none(at::Tensor* const* params, size_t n, char* err, size_t cap) {
  AMP_TRY
  for (size_t i = 0; i < n; i++) params[i]->mutable_grad().reset();
  AMP_CATCH(err, cap)
}

// LARS (optimizers/lars.py of the reference) on the weight-decay group, in
// place on the gradients: g += wd·w, then g *= η‖w‖/(‖g‖+ε) where both
// norms are positive, else 1. The norms are two multi-tensor kernels and
// the ratios one small vector; nothing is read back to the host.
int selfsup_lars_adapt(at::Tensor* const* weights, at::Tensor* const* grads, size_t n, double wd, double eta, double eps, char* err, size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  auto w = list(weights, n);
  auto g = list(grads, n);
  if (wd > 0) at::_foreach_add_(g, w, wd);
  auto wn = at::stack(at::_foreach_norm(w));
  auto gn = at::stack(at::_foreach_norm(g));
  auto ratio = wn.mul(eta).div(gn.add(eps));
  auto ok = wn.gt(0).logical_and(gn.gt(0));
  ratio = at::where(ok, ratio, at::ones_like(ratio));
  at::_foreach_mul_(g, ratio.unbind(0));
  AMP_CATCH(err, cap)
}

// torch.optim.SGD(fused=True): one fused update of every parameter, with
// momentum buffers when `bufs` is non-null, coupled weight decay `wd`. With
// `found_inf` (a GradScaler's flag, on the device) the kernel leaves
// parameters and buffers untouched when it is set. Buffers start at zero,
// so buf = momentum·0 + g equals torch's first-step clone exactly.
int selfsup_fused_sgd(
    at::Tensor* const* params,
    at::Tensor* const* grads,
    at::Tensor* const* bufs,
    size_t n,
    double wd,
    double momentum,
    double lr,
    const at::Tensor* found_inf,
    char* err,
    size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> b = bufs == nullptr ? std::vector<at::Tensor>{} : list(bufs, n);
  at::_fused_sgd_(list(params, n), list(grads, n), b, wd, momentum, lr, 0.0, false, false, false, std::nullopt, maybe(found_inf));
  AMP_CATCH(err, cap)
}

// torch.optim.Adam/AdamW(fused=True) with torch's defaults (β 0.9, 0.999,
// ε 1e-8, no amsgrad). `step` is one float32 step counter on the device,
// shared by every parameter, already advanced for this step by the caller.
// With `found_inf` set the kernel leaves everything untouched.
int selfsup_fused_adam(
    at::Tensor* const* params,
    at::Tensor* const* grads,
    at::Tensor* const* exp_avgs,
    at::Tensor* const* exp_avg_sqs,
    size_t n,
    const at::Tensor* step,
    double lr,
    double wd,
    int decoupled,
    const at::Tensor* found_inf,
    char* err,
    size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> steps(n, *step);
  auto p = list(params, n);
  auto g = list(grads, n);
  auto m = list(exp_avgs, n);
  auto v = list(exp_avg_sqs, n);
  if (decoupled) {
    at::_fused_adamw_(p, g, m, v, {}, steps, lr, 0.9, 0.999, wd, 1e-8, false, false, std::nullopt, maybe(found_inf));
  } else {
    at::_fused_adam_(p, g, m, v, {}, steps, lr, 0.9, 0.999, wd, 1e-8, false, false, std::nullopt, maybe(found_inf));
  }
  AMP_CATCH(err, cap)
}

// torch.optim.RMSprop(foreach=True) with its defaults (α 0.99, ε 1e-8):
// square_avg = α·square_avg + (1−α)·g², w -= lr·g/(√square_avg + ε).
int selfsup_foreach_rmsprop(
    at::Tensor* const* params,
    at::Tensor* const* grads,
    at::Tensor* const* square_avgs,
    size_t n,
    double lr,
    double wd,
    char* err,
    size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  const double alpha = 0.99, eps = 1e-8;
  auto p = list(params, n);
  auto g = list(grads, n);
  auto sq = list(square_avgs, n);
  if (wd != 0) g = at::_foreach_add(g, p, wd);
  at::_foreach_mul_(sq, alpha);
  at::_foreach_addcmul_(sq, g, g, 1 - alpha);
  auto avg = at::_foreach_sqrt(sq);
  at::_foreach_add_(avg, eps);
  at::_foreach_addcdiv_(p, g, avg, -lr);
  AMP_CATCH(err, cap)
}

// torch.optim.Adadelta(foreach=True) with its defaults (ρ 0.9, ε 1e-6).
int selfsup_foreach_adadelta(
    at::Tensor* const* params,
    at::Tensor* const* grads,
    at::Tensor* const* square_avgs,
    at::Tensor* const* acc_deltas,
    size_t n,
    double lr,
    double wd,
    char* err,
    size_t cap) {
  AMP_TRY
  if (n == 0) return 0;
  at::NoGradGuard no_grad;
  const double rho = 0.9, eps = 1e-6;
  auto p = list(params, n);
  auto g = list(grads, n);
  auto sq = list(square_avgs, n);
  auto acc = list(acc_deltas, n);
  if (wd != 0) g = at::_foreach_add(g, p, wd);
  at::_foreach_mul_(sq, rho);
  at::_foreach_addcmul_(sq, g, g, 1 - rho);
  auto std = at::_foreach_add(sq, eps);
  at::_foreach_sqrt_(std);
  auto delta = at::_foreach_add(acc, eps);
  at::_foreach_sqrt_(delta);
  at::_foreach_div_(delta, std);
  at::_foreach_mul_(delta, g);
  at::_foreach_mul_(acc, rho);
  at::_foreach_addcmul_(acc, delta, delta, 1 - rho);
  at::_foreach_add_(p, delta, -lr);
  AMP_CATCH(err, cap)
}

// 1 (a float scalar on their device) when any of the tensors holds an inf
// or NaN, else 0: the norms of all of them (multi-tensor kernels on CUDA),
// then one reduction; nothing is read back, so the flag can travel with a
// step's metrics to the next read-back. A finite magnitude whose square
// overflows fp32 (above ~1e19) counts as non-finite too.
int selfsup_nonfinite(at::Tensor* const* ts, size_t n, const at::Tensor* like, at::Tensor** out, char* err, size_t cap) {
  AMP_TRY
  at::NoGradGuard no_grad;
  if (n == 0) {
    *out = new at::Tensor(at::zeros({}, like->options().dtype(at::kFloat)));
    return 0;
  }
  std::vector<at::Tensor> norms;
  for (auto& t : at::_foreach_norm(list(ts, n))) norms.push_back(t.to(at::kFloat));
  *out = new at::Tensor(at::isfinite(at::stack(norms)).logical_not().any().to(at::kFloat));
  AMP_CATCH(err, cap)
}

// ATen's vectorised kernel level on this CPU ("DEFAULT", "AVX2",
// "AVX512"; ATEN_CPU_CAPABILITY lowers it), fixed at its first use.
int selfsup_cpu_capability(char* buf, size_t cap) {
  try {
    auto s = at::get_cpu_capability();
    std::strncpy(buf, s.c_str(), cap - 1);
    buf[cap - 1] = '\0';
    return 0;
  } catch (...) {
    return 1;
  }
}

// `t` in channels_last layout (a new tensor; the same one if it already is).
int selfsup_channels_last(const at::Tensor* t, at::Tensor** out, char* err, size_t cap) {
  AMP_TRY
  *out = new at::Tensor(t->contiguous(at::MemoryFormat::ChannelsLast));
  AMP_CATCH(err, cap)
}

// 1 if `t` is dense in channels_last order.
int selfsup_is_channels_last(const at::Tensor* t) {
  return t->is_contiguous(at::MemoryFormat::ChannelsLast) ? 1 : 0;
}

} // extern "C"
