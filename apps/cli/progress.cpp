#include "progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "burst/error.h"

namespace burst::cli {

ProgressMode parse_progress(const std::string& text, const std::string& what) {
  if (text == "auto") return ProgressMode::kAuto;
  if (text == "on") return ProgressMode::kOn;
  if (text == "off") return ProgressMode::kOff;
  fail(what, ": expected auto, on or off, got '", text, "'");
}

bool ProgressBar::wanted(ProgressMode mode) {
  if (mode == ProgressMode::kAuto) return isatty(STDERR_FILENO) == 1;
  return mode == ProgressMode::kOn;
}

ProgressBar::ProgressBar(bool enabled) : enabled_(enabled) {
  if (enabled_) thread_ = std::thread([this] { loop(); });
}

ProgressBar::~ProgressBar() {
  if (!enabled_) return;
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void ProgressBar::begin(const std::string& label, double expected_seconds) {
  if (!enabled_) return;
  std::lock_guard lock(mutex_);
  label_ = label;
  expected_ = expected_seconds;
  start_ = std::chrono::steady_clock::now();
  active_ = true;
}

void ProgressBar::end() {
  if (!enabled_) return;
  std::lock_guard lock(mutex_);
  if (active_) draw(true);
  active_ = false;
}

void ProgressBar::loop() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, std::chrono::milliseconds(250));
    if (active_ && !stop_) draw(false);
  }
}

// Called with mutex_ held. One write per redraw, so the line never tears.
void ProgressBar::draw(bool final) {
  constexpr int kWidth = 30;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  // Never claims to be done before it is: the bar stops at 99% until the pass ends.
  const double fraction = final ? 1.0 : expected_ > 0 ? std::min(0.99, elapsed / expected_) : 0.0;
  const int filled = static_cast<int>(fraction * kWidth);
  char line[256];
  int n = std::snprintf(line, sizeof line, "\r[burst] %-16s [%.*s%.*s] %3.0f%%  %7.1f s", label_.c_str(), filled,
                        "##############################", kWidth - filled, "..............................",
                        100.0 * fraction, elapsed);
  if (final) n += std::snprintf(line + n, sizeof line - static_cast<std::size_t>(n), "\n");
  (void)!::write(STDERR_FILENO, line, static_cast<std::size_t>(std::min<int>(n, sizeof line - 1)));
}

}  // namespace burst::cli
