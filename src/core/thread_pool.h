// A fixed set of worker threads that run parallel loops. Workers sleep on a condition variable
// between loops (no spinning), so ranks-as-threads and oversubscribed runs stay fast.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace burst {

class ThreadPool {
 public:
  // More threads than this in one pool is a mistake (no CPU has that many per rank), refused
  // before any thread starts.
  static constexpr int kMaxThreads = 1024;

  // `threads` in [1, kMaxThreads] counts the calling thread, which takes part in every loop
  // as worker 0. Throws Error, with every started worker stopped, when a thread cannot be
  // created (the process's thread limit).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(task, worker) for task in [0, n), tasks handed out one at a time in increasing
  // order; worker is in [0, size()). Returns when all tasks are done; rethrows the first
  // exception a task threw (remaining tasks are skipped).
  void parallel_for(std::int64_t n, const std::function<void(std::int64_t, int)>& fn);

  // A pool of `threads` owned by the calling thread, created on first use and kept for reuse.
  static ThreadPool& for_this_thread(int threads);

 private:
  void worker_loop(int worker);
  void stop_workers();
  void run_tasks(int worker);

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::uint64_t generation_ = 0;
  int active_ = 0;
  bool stop_ = false;

  const std::function<void(std::int64_t, int)>* fn_ = nullptr;
  std::int64_t n_ = 0;
  std::int64_t next_ = 0;  // guarded by mutex_ (tasks are coarse: a lock per task is cheap)
  std::exception_ptr error_;
};

}  // namespace burst
