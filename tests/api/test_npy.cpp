// The .npy reader and writer: round trips, hostile files, headers read as NumPy reads them,
// unreadable paths and failed writes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "burst/error.h"
#include "burst/npy.h"

namespace burst {
namespace {

class Npy : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("burst_npy_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write_raw(const std::string& name, const std::string& bytes) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }
  static std::string header(const std::string& dict, std::size_t data_bytes) {
    std::string h = dict;
    while ((10 + h.size() + 1) % 64 != 0) h += ' ';
    h += '\n';
    std::string s = std::string("\x93NUMPY\x01\x00", 8);
    s += static_cast<char>(h.size() & 0xff);
    s += static_cast<char>(h.size() >> 8);
    return s + h + std::string(data_bytes, '\x01');
  }
};

TEST_F(Npy, RoundTrip) {
  std::vector<float> data(2 * 3 * 4 * 5);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<float>(i) * 0.5f - 7.0f;
  const auto path = (dir / "a.npy").string();
  write_npy(path, data.data(), {2, 3, 4, 5});
  const NpyArray a = read_npy(path, "--q");
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{2, 3, 4, 5}));
  EXPECT_EQ(a.data, data);
  write_npy(path, data.data(), {120});
  EXPECT_EQ(read_npy(path, "--q").shape, (std::vector<std::int64_t>{120}));
}

TEST_F(Npy, HostileFilesGiveErrorsNamingTheArgument) {
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  auto expect_error = [&](const std::string& path, const std::string& needle) {
    try {
      read_npy(path, "--k");
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("--k"), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error((dir / "missing.npy").string(), "cannot open");
  expect_error(write_raw("empty.npy", ""), "too short");
  expect_error(write_raw("magic.npy", "NOTNUMPYATALL"), "not a .npy");
  expect_error(write_raw("trunc_header.npy", header(good, 24).substr(0, 40)), "header");
  expect_error(write_raw("trunc_data.npy", header(good, 23)), "holds 23 data bytes");
  expect_error(write_raw("extra_data.npy", header(good, 25)), "holds 25 data bytes");
  expect_error(write_raw("f8.npy", header("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", 48)), "float32");
  expect_error(write_raw("fortran.npy", header("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24)), "C order");
  expect_error(write_raw("huge.npy", header("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999, 99999999999), }", 24)), "larger than");
  expect_error(write_raw("negative.npy", header("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", 24)), "non-negative");
  expect_error(write_raw("noshape.npy", header("{'descr': '<f4', 'fortran_order': False}", 24)), "shape");
  std::string big_len = header(good, 24);
  big_len[8] = '\xff';
  big_len[9] = '\xff';
  expect_error(write_raw("biglen.npy", big_len), "header of 65535 bytes");
}

// numpy reads the header with ast.literal_eval: any syntax it accepts for these keys is read
// alike, and of a key given twice the last counts (numpy loads dup_shape.npy as (6,)).
TEST_F(Npy, HeaderIsReadLikeNumpy) {
  std::mt19937 rng(41);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  auto file = [&](const std::string& name, const std::string& dict, std::size_t count, std::vector<float>& values) {
    values.resize(count);
    for (float& x : values) x = dist(rng);
    std::string h = header(dict, 0);
    h.append(reinterpret_cast<const char*>(values.data()), count * sizeof(float));
    return write_raw(name, h);
  };
  struct Case {
    const char* name;
    const char* dict;
    std::vector<std::int64_t> shape;
  };
  const Case cases[] = {
      {"double_quotes.npy", R"({"descr": "<f4", "fortran_order": False, "shape": (2, 3)})", {2, 3}},
      {"tight.npy", "{'descr':'<f4',\t'fortran_order':False,'shape':(2,3,)}", {2, 3}},
      {"spaced.npy", "  { 'descr' : '<f4' ,\n 'fortran_order' : False , 'shape' : ( 2 , 3 ) , } ", {2, 3}},
      {"one_dim.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", {6}},
      {"scalar.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", {}},
      {"dup_shape.npy", "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'shape': (6,), }", {6}},
      {"dup_descr.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), 'descr': '<f4'}", {2, 3}},
      {"order_first.npy", "{'shape': (3, 1, 2), 'fortran_order': True, 'descr': '<f4', 'fortran_order': False}", {3, 1, 2}},
  };
  for (const Case& c : cases) {
    std::int64_t count = 1;
    for (std::int64_t d : c.shape) count *= d;
    std::vector<float> values;
    const std::string path = file(c.name, c.dict, static_cast<std::size_t>(count), values);
    try {
      const NpyArray a = read_npy(path, "--k");
      EXPECT_EQ(a.shape, c.shape) << c.name;
      EXPECT_EQ(a.data, values) << c.name;
    } catch (const Error& e) {
      ADD_FAILURE() << c.name << ": " << e.what();
    }
  }
}

// Headers numpy refuses ("Cannot parse header", wrong keys, wrong value types) are refused,
// each with a message naming the argument, the file and what is wrong.
TEST_F(Npy, MalformedHeadersAreRefusedLikeNumpy) {
  auto expect_error = [&](const std::string& name, const std::string& dict, const std::string& needle) {
    const std::string path = write_raw(name, header(dict, 24));
    try {
      const NpyArray a = read_npy(path, "--k");
      ADD_FAILURE() << "no error for " << name << ", read shape of " << a.shape.size() << " dimensions";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("--k"), std::string::npos) << msg;
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << name << ": " << msg;
    }
  };
  const std::string head = "{'descr': '<f4', 'fortran_order': False, ";
  expect_error("stray.npy", "{'descr': '<f4', 'x', 'fortran_order': False, 'shape': (2, 3), }", "expected ':' after the key 'x'");
  expect_error("no_brace.npy", head + "'shape': (2, 3), ", "expected a string key or '}' at byte");
  expect_error("no_brace2.npy", head + "'shape': (2, 3)", "expected ',' or '}'");
  expect_error("trailing.npy", head + "'shape': (2, 3), } x", "only whitespace after the closing '}'");
  expect_error("two_commas.npy", head + "'shape': (2, 3),, }", "a string key or '}'");
  expect_error("tuple_commas.npy", head + "'shape': (2,, 3), }", "a non-negative integer");
  expect_error("leading_zero.npy", head + "'shape': (02, 3), }", "without leading zeros");
  expect_error("float_dim.npy", head + "'shape': (2.0, 3), }", "a decimal integer");
  expect_error("no_colon.npy", "{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", "':' after the key 'descr'");
  expect_error("mixed_quotes.npy", "{'descr\": '<f4', 'fortran_order': False, 'shape': (2, 3), }", "expected ':'");
  expect_error("escape.npy", "{'descr': '<\\x66', 'fortran_order': False, 'shape': (2, 3), }", "escape");
  expect_error("none.npy", head + "'shape': None}", "expected a value");
  expect_error("list.npy", head + "'shape': [2, 3]}", "expected a value");
  expect_error("adjacent.npy", "{'descr': '<f' '4', 'fortran_order': False, 'shape': (2, 3)}", "',' or '}'");
  expect_error("not_dict.npy", "('descr', '<f4')", "a dict starting with '{'");
  expect_error("empty_dict.npy", "{,}", "a string key or '}'");
  expect_error("extra_key.npy", head + "'shape': (2, 3), 'x': (1,)}", "unexpected key 'x'");
  expect_error("no_descr.npy", "{'fortran_order': False, 'shape': (2, 3)}", "without 'descr'");
  expect_error("int_shape.npy", head + "'shape': 6}", "not a tuple of non-negative integers: 6");
  expect_error("paren_int.npy", head + "'shape': (6)}", "not a tuple of non-negative integers: (6)");
  expect_error("int_order.npy", "{'descr': '<f4', 'fortran_order': 0, 'shape': (2, 3)}", "not True or False: 0");
  expect_error("tuple_descr.npy", "{'descr': (4,), 'fortran_order': False, 'shape': (2, 3)}", "float32");
  expect_error("binary.npy", std::string("{'descr': '<f4',") + '\0' + " 'fortran_order': False, 'shape': (2, 3)}",
               "at byte 16 of the header, got '? 'fortran");
}

// A path that is no readable file says why, rather than reading a directory as a file of
// 2^63 - 1 bytes.
TEST_F(Npy, UnreadablePathsSayWhy) {
  auto expect_error = [&](const std::string& path, const std::string& needle) {
    try {
      read_npy(path, "--q");
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("--q"), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  expect_error(dir.string(), "is a directory");
  expect_error((dir / "missing.npy").string(), "cannot open");
  expect_error((dir / "missing.npy").string(), "No such file or directory");
  const std::string file = write_raw("plain.npy", "x");
  expect_error(file + "/q.npy", "Not a directory");
  if (std::filesystem::exists("/dev/null")) expect_error("/dev/null", "not a regular file");
}

// A write that fails, at open, in a write or only when the buffered tail is flushed at close,
// is an OutputError naming the file and the system's reason.
TEST_F(Npy, WriteFailuresAreOutputErrors) {
  std::vector<float> data(24);
  std::mt19937 rng(43);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (float& x : data) x = dist(rng);
  auto expect_output_error = [&](const std::string& path, const std::string& needle) {
    try {
      write_npy(path, data.data(), {2, 3, 4});
      ADD_FAILURE() << "no error writing " << path;
    } catch (const OutputError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not an OutputError writing " << path << ": " << e.what();
    }
  };
  expect_output_error((dir / "no_such_dir" / "o.npy").string(), "No such file or directory");
  expect_output_error(dir.string(), "Is a directory");
  // /dev/full takes every write into the buffer and fails the flush at close.
  if (std::filesystem::exists("/dev/full")) {
    expect_output_error("/dev/full", "No space left on device");
  } else {
    GTEST_SKIP() << "no /dev/full on this machine";
  }
}

}  // namespace
}  // namespace burst
