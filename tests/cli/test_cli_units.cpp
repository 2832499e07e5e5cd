// Parts of the `burst` command checked without running it: `burst plan`'s flags, output and
// calibration files, and `burst run`'s memory estimate from input files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "burst/error.h"
#include "burst/npy.h"
#include "burst/plan.h"
#include "memory.h"
#include "plan.h"
#include "plan_calibration.h"

namespace burst {
namespace {

// ---- The command ----

int plan_main(std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return cli::run_plan(std::span<char* const>(argv.data(), argv.size()));
}

void expect_error(std::vector<std::string> args, const std::string& start) {
  try {
    plan_main(std::move(args));
    ADD_FAILURE() << "expected an error starting with " << start;
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(start, 0), 0u) << e.what();
    EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos) << "one line: " << e.what();
  }
}

TEST(PlanCommand, ErrorsNameTheFlag) {
  expect_error({"--seqlen", "32X"}, "--seqlen:");
  expect_error({"--seqlen"}, "--seqlen:");
  expect_error({"--cluster", "9xH100"}, "--cluster:");
  expect_error({"--model", "gpt"}, "--model:");
  expect_error({"--flops", "-3"}, "--flops:");
  expect_error({"--ranks", "0"}, "--ranks:");
  expect_error({"--ranks", "12", "--nodes", "5"}, "--ranks:");
  expect_error({"--strategy", "burst,fast"}, "--strategy:");
  expect_error({"--scope", "all"}, "--scope:");
  expect_error({"--frobnicate"}, "arguments:");
  expect_error({"--causal=yes"}, "--causal:");
  expect_error({"--cluster", "this", "--calibration", "/nonexistent/calibration.json"}, "--cluster this:");
  expect_error({"--model", "custom"}, "--model:");
  expect_error({"--rounds", "3"}, "--rounds:");
  expect_error({"--calibrate", "--rounds", "0"}, "--rounds:");
  expect_error({"--speed", "0"}, "--speed:");
  expect_error({"--probe", "-1"}, "--probe:");
  expect_error({"--calibrate", "--probe", "1"}, "--probe cannot be combined with --calibrate");
  expect_error({"--probe", "1", "--calibration", "/nonexistent/calibration.json"}, "--probe:");
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The first number after "key": in a JSON text.
double first_number(const std::string& text, const std::string& key) {
  const auto at = text.find("\"" + key + "\": ");
  EXPECT_NE(at, std::string::npos) << key;
  return at == std::string::npos ? 0 : std::stod(text.substr(at + key.size() + 4));
}

// The fit line: when more ranks no longer lower the memory per rank (LLaMA-2 7b training:
// its fp32 weights and gradients alone exceed an A100's 40 GB, and no strategy here shards
// them), it says so instead of trying up to 1024x the ranks.
TEST(PlanCommand, FitStopsWhereMoreRanksDoNotHelp) {
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--seqlen", "64K", "--strategy", "burst"}), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("fit       nothing fits 65536 tokens in memory; more ranks do not lower the memory per rank below "),
            std::string::npos)
      << out;
  // Where more ranks do fit, it names how many.
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--seqlen", "1M", "--strategy", "burst", "--forward-only"}), 0);
  const std::string fits = testing::internal::GetCapturedStdout();
  EXPECT_NE(fits.find(" ranks ("), std::string::npos) << fits;
}

// --speed F scales the compute rates: the compute time of every strategy by 1 / F, links not.
TEST(PlanCommand, SpeedScalesCompute) {
  const std::string base = ::testing::TempDir() + "/plan_speed1.json", half = ::testing::TempDir() + "/plan_speed05.json";
  const std::vector<std::string> args = {"--cluster", "8xA100-PCIe", "--seqlen", "64K", "--strategy", "burst",
                                         "--forward-only"};
  testing::internal::CaptureStdout();
  std::vector<std::string> a = args, b = args;
  a.insert(a.end(), {"--json", base});
  b.insert(b.end(), {"--speed", "0.5", "--json", half});
  EXPECT_EQ(plan_main(a), 0);
  EXPECT_EQ(plan_main(b), 0);
  testing::internal::GetCapturedStdout();
  const std::string one = read_text(base), slow = read_text(half);
  EXPECT_NEAR(first_number(slow, "compute_seconds") / first_number(one, "compute_seconds"), 2.0, 1e-7);
  EXPECT_DOUBLE_EQ(first_number(slow, "forward_bytes_per_rank"), first_number(one, "forward_bytes_per_rank"));
}

// A calibration with every required figure.
plan::Calibration example_calibration() {
  plan::Calibration cal;
  cal.cores = 2;
  cal.memory_bytes = 16e9;
  cal.attention_forward_f32 = 80e9;
  cal.attention_backward_f32 = 60e9;
  cal.attention_forward_bf16 = 110e9;
  cal.attention_backward_bf16 = 90e9;
  cal.gemm_f32 = 90e9;
  cal.memory_bandwidth = 10e9;
  cal.link_backend = "local";
  cal.link_bandwidth = 5e9;
  cal.link_latency = 30e-6;
  cal.measured_at = "now";
  return cal;
}

// --probe reads the kernels' rate now and prints it over the calibration's.
TEST(PlanCommand, ProbeReadsTheSpeedAgainstTheCalibration) {
  plan::Calibration cal = example_calibration();
  cal.attention_forward_f32 = 1e9;  // far below any core's rate
  const std::string path = ::testing::TempDir() + "/plan_probe_calibration.json";
  cli::save_calibration(path, cal);
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--probe", "0.1", "--calibration", path}), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  ASSERT_EQ(out.rfind("speed ", 0), 0u) << out;
  const double speed = std::stod(out.substr(6));
  EXPECT_GT(speed, 1.0) << out;  // at least 1 GFLOP/s per core
  EXPECT_LT(speed, 1e4) << out;
  EXPECT_NE(out.find(path), std::string::npos) << out;
}

TEST(PlanCommand, RunsPresetsAndWritesJson) {
  testing::internal::CaptureStdout();
  const std::string json = ::testing::TempDir() + "/plan.json";
  EXPECT_EQ(plan_main({"--paper", "--json", json}), 0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("recommended: "), std::string::npos);
  EXPECT_NE(out.find("BurstAttention"), std::string::npos);
  EXPECT_NE(out.find("(5.13)"), std::string::npos);
  std::ifstream in(json);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("\"out_of_memory\": true"), std::string::npos);
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--help"}), 0);
  EXPECT_NE(testing::internal::GetCapturedStdout().find("--link-gbps"), std::string::npos);
}

// --block plans transformer blocks: L = 1 and the SwiGLU default F unless given; tensor
// parallelism that cannot split F over the ranks is listed as unable to run, with the reason.
TEST(PlanCommand, Block) {
  const std::string json = ::testing::TempDir() + "/plan_block.json";
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--block", "--cluster", "8xA100-PCIe", "--model", "custom", "--heads", "6", "--head-dim", "128",
                       "--ranks", "3", "--seqlen", "4K", "--strategy", "burst,tp-v3", "--json", json}),
            0);
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("scope block"), std::string::npos) << out;
  EXPECT_NE(out.find("custom (1 layers, 6/6 heads, d 128, D 768, MLP 2048)"), std::string::npos) << out;
  std::ifstream in(json);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("\"scope\": \"block\""), std::string::npos);
  EXPECT_NE(ss.str().find("mlp_dim must be a multiple of 3, got 2048"), std::string::npos) << ss.str();
  expect_error({"--block", "--scope", "core"}, "--block cannot be combined with --scope");
}

// --layout sets the layout of the strategies whose work depends on it, S@L names one, and
// --top under a causal mask ranks every layout; a contiguous layout is never the best there.
// Without a mask a layout is refused, as is a layout given twice.
TEST(PlanCommand, Layouts) {
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--forward-only", "--seqlen", "64K", "--top", "40"}), 0);
  std::string out = testing::internal::GetCapturedStdout();
  for (const char* name : {"burst@striped", "burst@contiguous", "allgather@contiguous", "ulysses "})
    EXPECT_NE(out.find(name), std::string::npos) << name << "\n" << out;
  EXPECT_EQ(out.find("ulysses@"), std::string::npos) << out;
  const std::size_t recommended = out.find("recommended: ");
  ASSERT_NE(recommended, std::string::npos) << out;
  EXPECT_EQ(out.substr(recommended, out.find('\n', recommended) - recommended).find("@contiguous ("), std::string::npos)
      << out;

  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--forward-only", "--seqlen", "64K", "--layout", "contiguous",
                       "--strategy", "burst,ulysses"}),
            0);
  out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("burst@contiguous"), std::string::npos) << out;
  EXPECT_NE(out.find("ulysses"), std::string::npos) << out;
  EXPECT_EQ(out.find("ulysses@"), std::string::npos) << out;

  expect_error({"--layout", "balanced"}, "--layout:");
  expect_error({"--layout", "diagonal"}, "--layout:");
  expect_error({"--no-causal", "--layout", "striped"}, "--layout:");
  expect_error({"--layout", "striped", "--strategy", "burst@contiguous"}, "--layout cannot be combined");
  expect_error({"--no-causal", "--strategy", "burst@striped"}, "--strategy burst@striped:");
  expect_error({"--strategy", "ulysses@striped"}, "--strategy:");

  // A sliding window: the table says so, and under a causal window contiguous shards (whose
  // keys stop after one hop) beat zigzag. A window alone is a mask too: layouts apply.
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--forward-only", "--window", "4095,0", "--seqlen", "256K",
                       "--strategy", "burst,burst@contiguous"}),
            0);
  out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("causal, window 4095,0"), std::string::npos) << out;
  EXPECT_NE(out.find("recommended: burst@contiguous"), std::string::npos) << out;
  testing::internal::CaptureStdout();
  EXPECT_EQ(plan_main({"--cluster", "8xA100-PCIe", "--no-causal", "--window", "8,8", "--layout", "striped", "--seqlen",
                       "4K", "--strategy", "burst"}),
            0);
  out = testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find("burst@striped"), std::string::npos) << out;
  // Nothing fits (a training step of llama2-7b on 40 GB): the fit line stops looking for
  // more ranks where they would outnumber the tokens (it used to fail there).
  EXPECT_NE(out.find("fit       nothing fits 4096 tokens"), std::string::npos) << out;
  expect_error({"--window", "5"}, "--window:");
  expect_error({"--window", "a,b"}, "--window:");
}

// A calibration file reads back what was written; causal and ring-rsa rates are optional
// (older files).
TEST(PlanCalibrationFile, RoundTrip) {
  plan::Calibration cal = example_calibration();
  cal.attention_forward_f32_causal = 70e9;
  cal.ring_rsa_forward_f32 = 30e9;
  cal.shared_core_efficiency = 0.85;
  const std::string path = ::testing::TempDir() + "/plan_calibration.json";
  cli::save_calibration(path, cal);
  const plan::Calibration back = cli::load_calibration(path, "--cluster this");
  EXPECT_DOUBLE_EQ(back.attention_forward_f32, 80e9);
  EXPECT_DOUBLE_EQ(back.attention_forward_f32_causal, 70e9);
  EXPECT_DOUBLE_EQ(back.attention_backward_f32_causal, 0);
  EXPECT_DOUBLE_EQ(back.ring_rsa_forward_f32, 30e9);
  EXPECT_DOUBLE_EQ(back.ring_rsa_backward_f32, 0);
  EXPECT_DOUBLE_EQ(back.shared_core_efficiency, 0.85);
  EXPECT_EQ(back.link_backend, "local");
  EXPECT_EQ(back.cores, 2);
  EXPECT_EQ(back.kernel_heads, 8);
  EXPECT_EQ(back.kernel_tokens, 4096);
  EXPECT_EQ(back.tile_rows, 0);
  EXPECT_THROW(cli::load_calibration(::testing::TempDir() + "/missing.json", "--cluster this"), Error);
  // The kernels' problem and tile round trip; a file from before them measured 2 heads.
  cal.kernel_heads = 16;
  cal.kernel_tokens = 2048;
  cal.tile_rows = 128;
  cal.tile_cols = 64;
  cli::save_calibration(path, cal);
  const plan::Calibration tiled = cli::load_calibration(path, "--cluster this");
  EXPECT_EQ(tiled.kernel_heads, 16);
  EXPECT_EQ(tiled.kernel_tokens, 2048);
  EXPECT_EQ(tiled.tile_rows, 128);
  EXPECT_EQ(tiled.tile_cols, 64);
  std::string text = read_text(path), older;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);)
    if (line.find("kernel_") == std::string::npos && line.find("tile_") == std::string::npos) older += line + "\n";
  {
    std::ofstream out(path);
    out << older;
  }
  const plan::Calibration old = cli::load_calibration(path, "--cluster this");
  EXPECT_EQ(old.kernel_heads, 2);
  EXPECT_EQ(old.kernel_tokens, 4096);
  EXPECT_EQ(old.tile_rows, 0);
  EXPECT_DOUBLE_EQ(old.attention_forward_f32, 80e9);
}

// The printed calibration: the masked tile's line only when causal rates give one.
TEST(PlanCalibrationFile, PrintsTheMaskedTileWhenMeasured) {
  plan::Calibration cal = example_calibration();
  std::ostringstream plain;
  cli::print_calibration(plain, cal);
  EXPECT_NE(plain.str().find("attention fp32 forward 80.0 GFLOP/s, backward 60.0"), std::string::npos) << plain.str();
  EXPECT_EQ(plain.str().find("masked tile"), std::string::npos) << plain.str();
  cal.attention_forward_f32_causal = 40e9;  // twice the time over the visible pairs
  cal.attention_backward_f32_causal = 60e9;  // no extra
  cal.tile_rows = cal.tile_cols = 256;
  std::ostringstream tiled;
  cli::print_calibration(tiled, cal);
  // 4096 x 4097 / 2 visible pairs over 16 partial tiles of 65536: 8.00 tiles of extra work each.
  EXPECT_NE(tiled.str().find("fp32 masked tile       256 x 256: forward 8.00, backward 0.00 tiles"), std::string::npos)
      << tiled.str();
}

// The memory estimate of a run from .npy files is the estimate of the files' sizes, read from
// their headers, not of the size flags' defaults (32768 tokens); a file of the wrong rank
// fails there, naming the flag.
TEST(MemoryEstimate, SizesComeFromTheInputFiles) {
  const std::string dir = testing::TempDir() + "/burst_memory_estimate";
  std::filesystem::create_directories(dir);
  auto write = [&](const std::string& name, std::vector<std::int64_t> shape) {
    std::int64_t count = 1;
    for (std::int64_t x : shape) count *= x;
    const std::vector<float> zeros(static_cast<std::size_t>(count), 0.0f);
    write_npy(dir + "/" + name, zeros.data(), shape);
    return dir + "/" + name;
  };
  cli::RunArgs files;
  files.strategy = algo::Strategy::kRingRsa;
  files.q_path = write("q.npy", {1, 190, 4, 64});
  files.k_path = write("k.npy", {1, 190, 2, 64});
  files.v_path = write("v.npy", {1, 190, 2, 64});
  cli::RunArgs flags;
  flags.strategy = algo::Strategy::kRingRsa;
  flags.seqlen = 190;
  flags.heads = 4;
  flags.kv_heads = 2;
  flags.head_dim = 64;
  const double from_files = cli::estimate_memory(files, 2, 2, 1).this_machine;
  EXPECT_EQ(from_files, cli::estimate_memory(flags, 2, 2, 1).this_machine);
  EXPECT_LT(from_files, 1e8);  // the default 32768 tokens would need tens of GB

  cli::RunArgs layer;
  layer.layer = true;
  layer.x_path = write("x.npy", {2, 300, 96});
  cli::RunArgs layer_flags;
  layer_flags.layer = true;
  layer_flags.batch = 2;
  layer_flags.seqlen = 300;
  layer_flags.model_dim = 96;
  EXPECT_EQ(cli::estimate_memory(layer, 2, 2, 1).this_machine, cli::estimate_memory(layer_flags, 2, 2, 1).this_machine);

  files.q_path = write("q3.npy", {190, 4, 64});
  try {
    (void)cli::estimate_memory(files, 2, 2, 1);
    ADD_FAILURE() << "a 3-D --q file was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--q: expected a 4-D array"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace burst
