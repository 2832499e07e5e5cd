// libFuzzer target for the .npy reader: any bytes must give an array or a burst::Error, never
// a crash, a hang or an oversized allocation. Built by the BURST_FUZZ option with clang:
//   CXX=clang++ cmake -S . -B build/fuzz -DBURST_FUZZ=ON -DBURST_BUILD_BENCH=OFF
//   cmake --build build/fuzz --target npy_fuzz && build/fuzz/bin/npy_fuzz -max_total_time=60
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

#include "burst/npy.h"
#include "burst/error.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string path = "/tmp/burst_npy_fuzz_" + std::to_string(::getpid()) + ".npy";
  if (FILE* f = std::fopen(path.c_str(), "wb")) {
    std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  try {
    const burst::NpyArray a = burst::read_npy(path, "--fuzz");
    std::size_t count = 1;
    for (std::int64_t d : a.shape) count *= static_cast<std::size_t>(d);
    if (count != a.data.size()) __builtin_trap();  // the reader's own promise
  } catch (const burst::Error&) {
  }
  return 0;
}
