// Where parallel_for's chunks run.
//
// slimtorch is not compiled with OpenMP: torch's wheel carries its own OpenMP
// runtime (libgomp), and a second runtime in the same process oversubscribes
// the cores. When torch's libgomp is loaded (it is, once `import torch` ran:
// torch loads it into the global symbol scope), parallel_for runs its chunks
// on torch's own OpenMP team through GOMP_parallel, the entry point GCC emits
// for `#pragma omp parallel`. Then torch's ops and ours share one set of
// threads: no core is fought over, and a team still spinning after torch's
// last op takes our job without a wake-up. A condition-variable wake of a
// sleeping thread costs a sizeable fraction of a small int8 layer's time.
//
// Without libgomp (the edge build, the C++ tests), with
// SLIMTORCH_POOL=builtin, or in a forked child, a small persistent pool of
// our own runs the chunks.
// The Python op layer passes torch.get_num_threads() as n_threads, so kernels
// follow torch's setting either way.
#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "slimtorch/common.h"

namespace slimtorch {
namespace {

class ThreadPool {
 public:
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_chunks_ = n_chunks;
      pending_ = n_chunks - 1;
      ++generation_;
    }
    wake_.notify_all();
    fn(0);
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void grow(int n_workers) {
    while (int(workers_.size()) < n_workers) {
      const int chunk = int(workers_.size()) + 1;
      workers_.emplace_back([this, chunk] { work(chunk); });
    }
  }

  void work(int chunk) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (chunk >= job_chunks_) continue;
      const std::function<void(int)>* job = job_;
      lock.unlock();
      (*job)(chunk);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex busy_;   // held for the duration of one parallel_for
  std::mutex mutex_;  // guards the job fields below
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int)>* job_ = nullptr;
  int job_chunks_ = 0;
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

// The process that loaded the library. A forked child inherits the pools'
// bookkeeping but none of their threads: waiting on those would hang (torch's
// own OpenMP ops hang there too, which is why DataLoader workers run on one
// thread). A child therefore gets a fresh built-in pool.
const pid_t loading_process = getpid();

ThreadPool& pool() {
  // Leaked on purpose: joining threads from a static destructor at interpreter
  // exit can deadlock; the OS reclaims them. After a fork the old one is
  // leaked too (its threads do not exist in the child).
  static ThreadPool* instance = new ThreadPool();
  static pid_t owner = getpid();
  if (owner != getpid()) {
    instance = new ThreadPool();
    owner = getpid();
  }
  return *instance;
}

// void GOMP_parallel(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags):
// runs fn(data) on a team of num_threads threads (the caller is one of them)
// and returns when all have finished. Stable libgomp ABI since GCC 4.9.
using GompParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

GompParallel gomp_parallel() {
  static const GompParallel found =
      reinterpret_cast<GompParallel>(dlsym(RTLD_DEFAULT, "GOMP_parallel"));
  return found;
}

bool use_builtin_pool() {
  const char* forced = std::getenv("SLIMTORCH_POOL");  // read per call: tests switch it
  return gomp_parallel() == nullptr || (forced != nullptr && std::strcmp(forced, "builtin") == 0) ||
         getpid() != loading_process;  // a forked child: libgomp's team is gone (see loading_process)
}

struct TeamJob {
  const std::function<void(int)>* run_chunk;
  int chunks;
  std::atomic<int> next{0};
};

// Every team member takes chunks until none is left, so the job completes
// whatever team size the runtime grants (fewer threads when nested, say).
void team_member(void* data) {
  auto* job = static_cast<TeamJob*>(data);
  for (int t = job->next.fetch_add(1); t < job->chunks; t = job->next.fetch_add(1)) (*job->run_chunk)(t);
}

// Runs run_chunk(t) for t in [0, chunks), each exactly once.
void run_chunks(int chunks, const std::function<void(int)>& run_chunk) {
  if (!use_builtin_pool()) {
    TeamJob job{&run_chunk, chunks};
    gomp_parallel()(team_member, &job, unsigned(chunks), 0);
    return;
  }
  if (!pool().run(chunks, run_chunk)) {
    for (int t = 0; t < chunks; ++t) run_chunk(t);
  }
}

}  // namespace

const char* thread_pool_name() { return use_builtin_pool() ? "builtin" : "openmp"; }

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
  run_chunks(chunks, run_chunk);
}

}  // namespace slimtorch
