#include "api/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace burst {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::uint64_t kMaxHeader = 1 << 20;

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\n");
  const auto b = s.find_last_not_of(" \t\n");
  return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
}

// Value text of key `key` in the header's Python dict literal (up to the next top-level ',').
std::string dict_value(const std::string& header, const std::string& key, const std::string& what) {
  const std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  std::size_t at = std::string::npos;
  for (const auto& q : quoted) {
    if ((at = header.find(q)) != std::string::npos) {
      at += q.size();
      break;
    }
  }
  BURST_CHECK(at != std::string::npos, what, ": .npy header has no '", key, "'");
  at = header.find(':', at);
  BURST_CHECK(at != std::string::npos, what, ": .npy header is malformed near '", key, "'");
  ++at;
  int depth = 0;
  std::size_t end = at;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if ((c == ',' && depth == 0) || c == '}' || depth < 0) break;
  }
  return trim(header.substr(at, end - at));
}

std::vector<std::int64_t> parse_shape(const std::string& text, const std::string& what) {
  BURST_CHECK(text.size() >= 2 && text.front() == '(' && text.back() == ')', what,
              ": .npy shape must be a tuple, got ", text);
  std::vector<std::int64_t> shape;
  std::stringstream ss(text.substr(1, text.size() - 2));
  std::string item;
  while (std::getline(ss, item, ',')) {
    item = trim(item);
    if (item.empty()) continue;
    BURST_CHECK(item.size() <= 15 && item.find_first_not_of("0123456789") == std::string::npos,
                what, ": .npy shape entry must be a non-negative integer, got '", item, "'");
    shape.push_back(std::stoll(item));
  }
  return shape;
}

}  // namespace

NpyArray read_npy(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  BURST_CHECK(in.good(), what, ": cannot open '", path, "'");
  in.seekg(0, std::ios::end);
  const auto file_size = static_cast<std::uint64_t>(in.tellg());
  in.seekg(0);

  char pre[10];
  BURST_CHECK(file_size >= 10 && in.read(pre, 10), what, ": '", path,
              "' is too short to be a .npy file (", file_size, " bytes)");
  BURST_CHECK(std::memcmp(pre, kMagic, kMagicLen) == 0, what, ": '", path, "' is not a .npy file");
  const auto major = static_cast<unsigned char>(pre[6]);
  std::uint64_t header_len = 0, prefix = 10;
  if (major == 1) {
    header_len = static_cast<unsigned char>(pre[8]) | (static_cast<unsigned char>(pre[9]) << 8);
  } else if (major == 2 || major == 3) {
    char extra[2];
    BURST_CHECK(in.read(extra, 2), what, ": '", path, "' ends inside its header");
    header_len = static_cast<std::uint64_t>(static_cast<unsigned char>(pre[8])) |
                 static_cast<std::uint64_t>(static_cast<unsigned char>(pre[9])) << 8 |
                 static_cast<std::uint64_t>(static_cast<unsigned char>(extra[0])) << 16 |
                 static_cast<std::uint64_t>(static_cast<unsigned char>(extra[1])) << 24;
    prefix = 12;
  } else {
    fail(what, ": '", path, "' has .npy version ", int{major}, ", expected 1, 2 or 3");
  }
  BURST_CHECK(header_len <= kMaxHeader && prefix + header_len <= file_size, what, ": '", path,
              "' has a header of ", header_len, " bytes but the file is ", file_size, " bytes");
  std::string header(header_len, '\0');
  BURST_CHECK(in.read(header.data(), static_cast<std::streamsize>(header_len)), what,
              ": '", path, "' ends inside its header");

  const std::string descr = dict_value(header, "descr", what);
  BURST_CHECK(descr == "'<f4'" || descr == "\"<f4\"", what, ": expected float32 ('<f4'), got ",
              descr, " in '", path, "'");
  const std::string order = dict_value(header, "fortran_order", what);
  BURST_CHECK(order == "False", what, ": expected C order, got fortran_order ", order);
  NpyArray array;
  array.shape = parse_shape(dict_value(header, "shape", what), what);

  const std::uint64_t payload = file_size - prefix - header_len;
  std::uint64_t count = 1;
  for (std::int64_t dim : array.shape) {
    const auto u = static_cast<std::uint64_t>(dim);
    // Bound the product before multiplying, so a hostile shape cannot overflow it.
    BURST_CHECK(u == 0 || count <= (payload / 4 + 1) / u + 1, what, ": '", path,
                "' declares a shape larger than its ", payload, " data bytes");
    count *= u;
  }
  BURST_CHECK(count * 4 == payload, what, ": '", path, "' declares ", count, " float32 values (",
              count * 4, " bytes) but holds ", payload, " data bytes");
  array.data.resize(count);
  BURST_CHECK(in.read(reinterpret_cast<char*>(array.data.data()), static_cast<std::streamsize>(payload)),
              what, ": could not read the data of '", path, "'");
  return array;
}

void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape) {
  std::string dims;
  std::int64_t count = 1;
  for (std::int64_t d : shape) {
    dims += std::to_string(d) + ", ";
    count *= d;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 1);  // "(3, 4, )" -> "(3, 4,)" is legal; keep "(3,)"
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Pad with spaces so data starts on a 64-byte boundary; the header ends with '\n'.
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  BURST_CHECK(out.good(), "cannot write '", path, "'");
  out.write(kMagic, kMagicLen);
  const char version[2] = {1, 0};
  out.write(version, 2);
  const auto len = static_cast<std::uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(count * 4));
  BURST_CHECK(out.good(), "write to '", path, "' failed");
}

}  // namespace burst
