// The data path's device plumbing, for what tch 0.24 does not bind:
// page-locked host buffers, CUDA streams and events, record_stream, and the
// torch profiler. Everything goes through c10's device-generic interfaces
// (c10::Stream, c10::Event, VirtualGuardImpl), which dispatch to the CUDA
// implementation that libc10_cuda registers when it is loaded; so this file
// needs no CUDA header and compiles against any libtorch. Called from
// native/src/pipeline/ on a trainer's owning thread (streams are
// thread-local current state in libtorch), except the pinned allocation,
// which loader threads call.
//
// A stream crosses the C ABI as (CUDA device index, c10 stream id).
// Every function returns 0, or 1 with a message in (err, cap).
#include "dist.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace {

c10::Stream stream_of(int device, int64_t id) {
  return c10::Stream::unpack3(id, static_cast<c10::DeviceIndex>(device), c10::DeviceType::CUDA);
}

c10::impl::VirtualGuardImpl& cuda_impl() {
  static c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return impl;
}

c10::Device cuda_device(int device) {
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
}

} // namespace

extern "C" {

// An empty uint8 CPU tensor of `nbytes` in page-locked memory from
// libtorch's caching host allocator: a freed block is reused once the
// copies that read it have finished (the allocator records an event on
// the copy's stream). The device-less form: Tensor.pin_memory(device) is
// deprecated in 2.11 and warns on every call.
int selfsup_pinned_empty(int64_t nbytes, at::Tensor** out, char* err, size_t cap) {
  SELFSUP_TRY
  auto opts = at::TensorOptions().dtype(at::kByte).device(at::kCPU).pinned_memory(true);
  *out = new at::Tensor(at::empty({nbytes}, opts));
  SELFSUP_CATCH(err, cap)
}

// The calling thread's current stream on CUDA device `device`.
int selfsup_stream_current(int device, int64_t* id, char* err, size_t cap) {
  SELFSUP_TRY
  *id = cuda_impl().getStream(cuda_device(device)).id();
  SELFSUP_CATCH(err, cap)
}

// A stream from libtorch's pool on `device` (torch.cuda.Stream()), for
// copies that run beside the compute stream.
int selfsup_stream_from_pool(int device, int64_t* id, char* err, size_t cap) {
  SELFSUP_TRY
  *id = cuda_impl().getStreamFromGlobalPool(cuda_device(device), false).id();
  SELFSUP_CATCH(err, cap)
}

// Makes stream `id` the calling thread's current one on `device`; the
// previous one goes to `prev` (torch.cuda.stream(s) as a pair of calls).
int selfsup_stream_exchange(int device, int64_t id, int64_t* prev, char* err, size_t cap) {
  SELFSUP_TRY
  *prev = cuda_impl().exchangeStream(stream_of(device, id)).id();
  SELFSUP_CATCH(err, cap)
}

// The caching allocator must not hand `t`'s memory to another stream's
// work before stream `id`'s queued work is done with it.
int selfsup_record_stream(const at::Tensor* t, int device, int64_t id, char* err, size_t cap) {
  SELFSUP_TRY
  t->record_stream(stream_of(device, id));
  SELFSUP_CATCH(err, cap)
}

// A CUDA event with timing (cudaEventDefault, not PyTorch's default
// cudaEventDisableTiming); created lazily by its first record.
int selfsup_event_new(void** out, char* err, size_t cap) {
  SELFSUP_TRY
  *out = new c10::Event(c10::DeviceType::CUDA, c10::EventFlag::BACKEND_DEFAULT);
  SELFSUP_CATCH(err, cap)
}

void selfsup_event_free(void* ev) {
  try {
    delete static_cast<c10::Event*>(ev);
  } catch (...) {
  }
}

int selfsup_event_record(void* ev, int device, int64_t id, char* err, size_t cap) {
  SELFSUP_TRY
  static_cast<c10::Event*>(ev)->record(stream_of(device, id));
  SELFSUP_CATCH(err, cap)
}

// Stream `id` waits (on the device, not the host) for the event.
int selfsup_event_block(void* ev, int device, int64_t id, char* err, size_t cap) {
  SELFSUP_TRY
  static_cast<c10::Event*>(ev)->block(stream_of(device, id));
  SELFSUP_CATCH(err, cap)
}

// The host waits for the event.
int selfsup_event_synchronize(void* ev, char* err, size_t cap) {
  SELFSUP_TRY
  static_cast<c10::Event*>(ev)->synchronize();
  SELFSUP_CATCH(err, cap)
}

// Milliseconds from `start` to `end`, both recorded and complete.
int selfsup_event_elapsed_ms(void* start, void* end, double* ms, char* err, size_t cap) {
  SELFSUP_TRY
  *ms = static_cast<c10::Event*>(start)->elapsedTime(*static_cast<c10::Event*>(end));
  SELFSUP_CATCH(err, cap)
}

// Opens a named range in the profiler's trace (record_function), or
// returns null when no profiler is listening; close it with
// selfsup_range_end on the same thread.
void* selfsup_range_begin(const char* name) {
  try {
    if (!at::hasCallbacks()) return nullptr;
    auto* rf = new at::RecordFunction(at::RecordScope::USER_SCOPE);
    rf->before(name);
    return rf;
  } catch (...) {
    return nullptr;
  }
}

void selfsup_range_end(void* range) {
  try {
    delete static_cast<at::RecordFunction*>(range);
  } catch (...) {
  }
}

namespace {

std::set<torch::profiler::impl::ActivityType> activities(int cuda) {
  using torch::profiler::impl::ActivityType;
  std::set<ActivityType> a{ActivityType::CPU};
  if (cuda) a.insert(ActivityType::CUDA);
  return a;
}

torch::profiler::impl::ProfilerConfig kineto_config() {
  return torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::KINETO, /*report_input_shapes=*/true);
}

} // namespace

// Readies torch's (Kineto) profiler for operators on the CPU and, with
// `cuda`, CUDA kernels and copies (through CUPTI). Call it on the thread
// that loaded libtorch: Kineto initialises its client there, and prints an
// error from any other thread.
int selfsup_profiler_prepare(int cuda, char* err, size_t cap) {
  SELFSUP_TRY
  // Kineto's start-up chatter (on a machine without a GPU: errors about
  // CUDA it was not asked to trace) is not the user's business; a user who
  // wants it sets KINETO_LOG_LEVEL.
  setenv("KINETO_LOG_LEVEL", "5", 0);
  torch::autograd::profiler::prepareProfiler(kineto_config(), activities(cuda));
  SELFSUP_CATCH(err, cap)
}

// Starts the prepared profiler for the calling thread's operators (and
// those of the autograd threads it starts).
int selfsup_profiler_start(int cuda, char* err, size_t cap) {
  SELFSUP_TRY
  torch::autograd::profiler::enableProfiler(kineto_config(), activities(cuda));
  SELFSUP_CATCH(err, cap)
}

// Stops the profiler, writes its Chrome trace (chrome://tracing,
// Perfetto) to `path`, and a table of the operators' self times into
// `table` (truncated to `table_cap`; `*table_len` gets the full length):
// each CPU operator's time less its child operators' on the same thread,
// and each kernel's device time, summed by name, largest first, the
// `top` largest of each kind.
int selfsup_profiler_stop(const char* path, int top, char* table, size_t table_cap, size_t* table_len, char* err, size_t cap) {
  SELFSUP_TRY
  auto result = torch::autograd::profiler::disableProfiler();
  if (!result) throw std::runtime_error("the profiler was not running");
  result->save(path);
  struct Total {
    double us = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Total> cpu, device;
  // CPU operators per thread, in start order: a stack of open operators
  // gives each one's children, whose time is not its own.
  std::map<uint64_t, std::vector<const torch::autograd::profiler::KinetoEvent*>> threads;
  for (const auto& e : result->events()) {
    if (e.deviceType() == c10::DeviceType::CPU) {
      threads[e.startThreadId()].push_back(&e);
    } else {
      auto& t = device[e.name()];
      t.us += e.durationNs() / 1e3;
      t.calls++;
    }
  }
  for (auto& [tid, evs] : threads) {
    std::sort(evs.begin(), evs.end(), [](auto a, auto b) {
      return a->startNs() != b->startNs() ? a->startNs() < b->startNs() : a->durationNs() > b->durationNs();
    });
    std::vector<std::pair<const torch::autograd::profiler::KinetoEvent*, double>> open; // event, its children's ns
    auto close_until = [&](uint64_t t) {
      while (!open.empty() && open.back().first->endNs() <= t) {
        auto [ev, children] = open.back();
        open.pop_back();
        auto& tot = cpu[ev->name()];
        tot.us += (ev->durationNs() - children) / 1e3;
        tot.calls++;
        if (!open.empty()) open.back().second += ev->durationNs();
      }
    };
    for (auto* e : evs) {
      close_until(e->startNs());
      open.emplace_back(e, 0.0);
    }
    close_until(UINT64_MAX);
  }
  std::ostringstream out;
  auto section = [&](const char* title, const std::map<std::string, Total>& totals) {
    std::vector<std::pair<std::string, Total>> v(totals.begin(), totals.end());
    if (v.empty()) return;
    double all = 0;
    for (auto& [_, t] : v) all += t.us;
    std::sort(v.begin(), v.end(), [](auto& a, auto& b) { return a.second.us > b.second.us; });
    char line[512];
    std::snprintf(line, sizeof line, "%-52s %12s %7s %8s\n", title, "self ms", "share", "calls");
    out << line;
    for (int i = 0; i < top && i < static_cast<int>(v.size()); i++) {
      std::string name = v[i].first.size() > 52 ? v[i].first.substr(0, 49) + "..." : v[i].first;
      std::snprintf(line, sizeof line, "%-52s %12.2f %6.1f%% %8lld\n", name.c_str(), v[i].second.us / 1e3,
                    all > 0 ? 100.0 * v[i].second.us / all : 0.0, static_cast<long long>(v[i].second.calls));
      out << line;
    }
  };
  section("CPU operators", cpu);
  section("device kernels and copies", device);
  std::string s = out.str();
  *table_len = s.size();
  if (table != nullptr && table_cap > 0) {
    size_t n = std::min(s.size(), table_cap - 1);
    std::memcpy(table, s.data(), n);
    table[n] = '\0';
  }
  SELFSUP_CATCH(err, cap)
}

} // extern "C"
