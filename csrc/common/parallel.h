// Grain sizes from measured costs: a parallel region only when every thread gets enough work.
//
// A parallel region costs a few microseconds when the machine is idle, but on a loaded machine
// (another job on the same cores) a worker thread may be descheduled, and the calling thread then
// waits a scheduler time slice (milliseconds) at the region's barrier. A fit of one person runs
// a few hundred SMPL calls of tens of microseconds each: parallel regions there made the fit 5x
// slower on 2 busy cores than on 1 thread. So, as ATen's kernels do with their grain sizes, work
// that is estimated below min_task_nanoseconds() per thread runs on the calling thread.
//
// Each kernel states its cost per item in nanoseconds, measured single-threaded on the
// development machine (benchmarks/RESULTS.md, "Grain sizes"); a factor of 2 either way moves
// the crossover a little, not the behaviour at the small and large ends that matters.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>

namespace meshrec {

// Below this much work per thread a parallel region is not worth its risk (benchmarks/RESULTS.md,
// "Grain sizes": where a second thread starts to pay for the SMPL forward, and what a region
// costs on a loaded machine). The environment variable MESHREC_MIN_TASK_NS overrides it (read
// once; 0 parallelises everything), for measuring the crossover on another machine.
constexpr double kMinTaskNanoseconds = 100000.0;

inline double min_task_nanoseconds() {
  static const double value = [] {
    const char* text = std::getenv("MESHREC_MIN_TASK_NS");
    if (text == nullptr || *text == '\0') return kMinTaskNanoseconds;
    char* end = nullptr;
    const double parsed = std::strtod(text, &end);
    return (end != text && parsed >= 0.0) ? parsed : kMinTaskNanoseconds;
  }();
  return value;
}

// Items per task so that a task holds at least min_task_nanoseconds() of work.
inline int64_t grain_for(double nanoseconds_per_item) {
  if (!(nanoseconds_per_item > 0.0)) return 1;
  const double items = std::ceil(min_task_nanoseconds() / nanoseconds_per_item);
  return items >= 1e15 ? int64_t(1e15) : std::max<int64_t>(1, static_cast<int64_t>(items));
}

// at::parallel_for(begin, end, grain_for(ns per item), fn): below the grain, fn runs once on the
// calling thread with the whole range.
template <typename F>
void parallel_for_cost(int64_t begin, int64_t end, double nanoseconds_per_item, const F& fn) {
  if (end <= begin) return;
  at::parallel_for(begin, end, grain_for(nanoseconds_per_item), fn);
}

// Threads worth using for `count` items of the given cost: at most the intra-op thread count,
// and each at least kMinTaskNanoseconds of work (1 runs on the calling thread).
inline int64_t threads_for(int64_t count, double nanoseconds_per_item) {
  const double total = static_cast<double>(count) * nanoseconds_per_item;
  const double minimum = min_task_nanoseconds();
  const int64_t useful = minimum > 0.0 ? static_cast<int64_t>(total / minimum) : count;
  return std::max<int64_t>(1, std::min<int64_t>({static_cast<int64_t>(at::get_num_threads()), useful, count}));
}

// fn(begin, end) over [0, count) in chunks handed out on demand: a thread slowed down (by other
// work on the machine, or by an uneven item) takes fewer chunks instead of holding the others at
// the barrier. Each chunk writes only its own outputs, so results do not depend on which thread
// ran it. Small work (threads_for == 1) runs on the calling thread without a parallel region.
template <typename F>
void parallel_dynamic(int64_t count, double nanoseconds_per_item, const F& fn) {
  if (count <= 0) return;
  const int64_t threads = threads_for(count, nanoseconds_per_item);
  if (threads == 1) {
    fn(0, count);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, count / (8 * threads));
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t begin = next.fetch_add(chunk); begin < count; begin = next.fetch_add(chunk)) {
      fn(begin, std::min(count, begin + chunk));
    }
  });
}

}  // namespace meshrec
