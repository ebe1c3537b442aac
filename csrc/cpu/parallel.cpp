// A small persistent thread pool. slimtorch does not use OpenMP: torch's
// wheel carries its own OpenMP runtime, and a second one in the same process
// oversubscribes the cores. The Python op layer passes torch.get_num_threads()
// as n_threads, so kernels follow torch's setting.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "slimtorch/common.h"

namespace slimtorch {
namespace {

// Wake-up latency decides whether threads pay off for mid-sized calls: a
// condition variable takes 50-100 us to wake a worker on a VM, longer than a
// 1M-element kernel runs. So workers spin on an atomic generation counter for
// kSpinTime after each job (as OpenMP runtimes do) and only then sleep.
class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_.store(true);
    }
    wake_.notify_all();
    for (auto& worker : workers_) worker.join();
  }

  // Runs fn(t) for t in [1, n_chunks) on workers and fn(0) on the caller.
  // Returns false, doing nothing, when another call holds the pool.
  bool run(int n_chunks, const std::function<void(int)>& fn) {
    std::unique_lock<std::mutex> busy(busy_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    grow(n_chunks - 1);
    job_ = &fn;
    pending_.store(n_chunks - 1, std::memory_order_relaxed);
    {
      // Under the mutex, so a worker about to sleep cannot miss the change.
      std::lock_guard<std::mutex> lock(mutex_);
      const uint64_t generation = (state_.load(std::memory_order_relaxed) >> kChunkBits) + 1;
      state_.store((generation << kChunkBits) | uint64_t(n_chunks), std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    fn(0);
    for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spins < 4096) pause();
      else std::this_thread::yield();  // a worker was descheduled: give it the core
    }
    return true;
  }

 private:
  static constexpr auto kSpinTime = std::chrono::microseconds(200);
  // state_ = generation << kChunkBits | chunks of that generation's job, in one
  // atomic: a worker outside the job (chunk >= chunks) never reads job_, which
  // the caller may already be replacing for the next generation.
  static constexpr int kChunkBits = 16;  // plan_chunks caps chunks at 256

  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }

  void grow(int n_workers) {
    while (int(workers_.size()) < n_workers) {
      const int chunk = int(workers_.size()) + 1;
      workers_.emplace_back([this, chunk] { work(chunk); });
    }
  }

  // Waits until state_ differs from `seen`, spinning first if `spin`; false
  // when stopping.
  bool wait_for_job(uint64_t seen, bool spin) {
    const auto spin_until = std::chrono::steady_clock::now() + (spin ? kSpinTime : std::chrono::microseconds(0));
    for (int spins = 0; state_.load(std::memory_order_acquire) == seen; ++spins) {
      pause();
      if ((spins & 255) == 255 && std::chrono::steady_clock::now() > spin_until) {
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_acq_rel);
        wake_.wait(lock, [&] {
          return stopping_.load() || state_.load(std::memory_order_acquire) != seen;
        });
        sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        break;
      }
    }
    return !stopping_.load();
  }

  void work(int chunk) {
    uint64_t seen = 0;
    bool took_part = false;
    // Only workers of the last job spin: one left out (fewer threads asked
    // for) sleeps at once instead of taking a core from those that work.
    while (wait_for_job(seen, took_part)) {
      seen = state_.load(std::memory_order_acquire);
      took_part = chunk < int(seen & ((1u << kChunkBits) - 1));
      if (!took_part) continue;
      // job_ was written before state_'s release and stays until pending_ is 0.
      (*job_)(chunk);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  std::mutex busy_;   // held for the duration of one parallel_for
  std::mutex mutex_;  // pairs with wake_ for sleeping workers
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stopping_{false};
};

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at interpreter
  // exit can deadlock; the OS reclaims them.
  static ThreadPool* instance = new ThreadPool();
  return *instance;
}

}  // namespace

int plan_chunks(int n_threads, int64_t n, int64_t grain) {
  if (n <= 0) return 1;
  grain = std::max<int64_t>(grain, 1);
  const int64_t by_size = (n + grain - 1) / grain;
  return int(std::max<int64_t>(1, std::min<int64_t>({int64_t(n_threads), by_size, 256})));
}

void parallel_for(int n_threads, int64_t n, int64_t grain, const RangeFn& fn) {
  if (n <= 0) return;
  const int chunks = plan_chunks(n_threads, n, grain);
  if (chunks == 1) {
    fn(0, n, 0);
    return;
  }
  const auto run_chunk = [&](int t) {
    const int64_t begin = n * t / chunks, end = n * (t + 1) / chunks;
    fn(begin, end, t);
  };
  if (!pool().run(chunks, run_chunk)) {
    for (int t = 0; t < chunks; ++t) run_chunk(t);
  }
}

}  // namespace slimtorch
