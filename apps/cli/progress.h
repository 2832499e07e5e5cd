// A one-line progress bar on stderr for long runs: the pass being timed, its repeat, elapsed
// time and a bar filled against an expected duration (the previous repeat's, or an estimate
// from the FLOPs). Redrawn a few times a second by a background thread; silent unless stderr
// is a terminal (or --progress on), so logs and pipes stay clean.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace burst::cli {

enum class ProgressMode { kAuto, kOn, kOff };
ProgressMode parse_progress(const std::string& text, const std::string& what);

class ProgressBar {
 public:
  // enabled: whether this process draws at all (rank 0 only, and the mode allows it).
  explicit ProgressBar(bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Starts a pass ("forward 2/3"); expected_seconds > 0 fills the bar against it.
  void begin(const std::string& label, double expected_seconds);
  // Ends the current pass and clears the line.
  void end();
  bool enabled() const { return enabled_; }

  // Whether a bar should be drawn for `mode` on this process's stderr.
  static bool wanted(ProgressMode mode);

 private:
  void loop();
  void draw(bool final);

  const bool enabled_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread thread_;
  bool stop_ = false, active_ = false;
  std::string label_;
  double expected_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace burst::cli
