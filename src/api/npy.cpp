#include "burst/npy.h"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <system_error>
#include <utility>

#include "burst/error.h"

namespace burst {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::uint64_t kMaxHeader = 1 << 20;
// Shape entries with more digits could overflow int64; real ones are checked against the
// file's size later anyway.
constexpr std::size_t kMaxDimDigits = 18;

struct CloseFile {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, CloseFile>;

std::string errno_text(int err) { return std::generic_category().message(err); }

// One value of the header dict. The header uses only these literal forms; anything else is
// refused while parsing.
struct HeaderValue {
  enum class Type { kString, kBool, kTuple, kInteger };
  Type type = Type::kString;
  std::string text;                 // the literal as written, for messages
  std::string string;               // kString: its characters
  bool boolean = false;             // kBool
  std::vector<std::int64_t> tuple;  // kTuple
};

// Parses the header's dict literal as strictly as numpy, which reads it with
// ast.literal_eval (a syntax error refuses the file; of a key given twice the last one
// counts) and then wants exactly the keys descr, fortran_order and shape. Accepted: strings
// in ' or " without escapes, True, False, tuples of non-negative decimal integers ((3,) and
// () included), optional trailing commas and whitespace. Forms no .npy writer produces
// (escapes, adjacent strings, comments, nested parentheses) are refused too.
class HeaderParser {
 public:
  HeaderParser(const std::string& header, const std::string& what, const std::string& path)
      : h_(header), what_(what), path_(path) {}

  std::map<std::string, HeaderValue> parse_dict() {
    std::map<std::string, HeaderValue> dict;
    skip_space();
    expect('{', "a dict starting with '{'");
    skip_space();
    while (!at('}')) {
      if (!at('\'') && !at('"')) malformed("a string key or '}'");
      const HeaderValue key = parse_string();
      skip_space();
      expect(':', "':' after the key " + key.text);
      skip_space();
      dict[key.string] = parse_value();  // a repeated key replaces the earlier value, as in Python
      skip_space();
      if (at(',')) {
        ++pos_;
        skip_space();
      } else if (!at('}')) {
        malformed("',' or '}' after the value of " + key.text);
      }
    }
    ++pos_;
    skip_space();
    if (pos_ != h_.size()) malformed("only whitespace after the closing '}'");
    return dict;
  }

  [[noreturn]] void malformed(const std::string& expected) const {
    std::string near;
    if (pos_ >= h_.size()) {
      near = "the end of the header";
    } else {
      // A printable excerpt without the padding (hostile headers may hold any bytes).
      std::string raw = h_.substr(pos_, 24);
      raw.erase(raw.find_last_not_of(" \t\n\r\f") + 1);
      std::string excerpt;
      for (const char c : raw) {
        excerpt += c == '\n' ? std::string("\\n") : (c >= 0x20 && c < 0x7f ? std::string(1, c) : std::string("?"));
      }
      near = "'" + excerpt + "'";
    }
    fail(what_, ": '", path_, "' has a malformed .npy header: expected ", expected, " at byte ", pos_,
         " of the header, got ", near);
  }

 private:
  bool at(char c) const { return pos_ < h_.size() && h_[pos_] == c; }
  bool at_digit() const { return pos_ < h_.size() && h_[pos_] >= '0' && h_[pos_] <= '9'; }
  void skip_space() {
    while (pos_ < h_.size() && (h_[pos_] == ' ' || h_[pos_] == '\t' || h_[pos_] == '\n' || h_[pos_] == '\r' ||
                                h_[pos_] == '\f')) {
      ++pos_;
    }
  }
  void expect(char c, const std::string& expected) {
    if (!at(c)) malformed(expected);
    ++pos_;
  }

  HeaderValue parse_value() {
    if (at('\'') || at('"')) return parse_string();
    if (at('(')) return parse_tuple();
    if (at_digit() || at('-')) {
      const std::size_t start = pos_;
      HeaderValue v;
      v.type = HeaderValue::Type::kInteger;
      if (at('-')) ++pos_;
      parse_integer();
      v.text = h_.substr(start, pos_ - start);
      return v;
    }
    const std::size_t start = pos_;
    while (pos_ < h_.size() && (std::isalnum(static_cast<unsigned char>(h_[pos_])) || h_[pos_] == '_')) ++pos_;
    const std::string word = h_.substr(start, pos_ - start);
    if (word == "True" || word == "False") {
      HeaderValue v;
      v.type = HeaderValue::Type::kBool;
      v.boolean = word == "True";
      v.text = word;
      return v;
    }
    pos_ = start;
    malformed("a value (a string, True, False or a tuple of integers)");
  }

  HeaderValue parse_string() {
    const std::size_t start = pos_;
    const char quote = h_[pos_++];
    HeaderValue v;
    while (!at(quote)) {
      if (pos_ >= h_.size() || h_[pos_] == '\n') malformed(std::string("the closing ") + quote + " of a string");
      if (h_[pos_] == '\\') malformed("a string without escape sequences");
      v.string += h_[pos_++];
    }
    ++pos_;
    v.text = h_.substr(start, pos_ - start);
    return v;
  }

  // A decimal integer as Python writes one: no sign, no leading zeros (except 0 itself), no
  // underscores.
  std::int64_t parse_integer() {
    if (!at_digit()) malformed("a non-negative integer");
    const std::size_t start = pos_;
    while (at_digit()) ++pos_;
    const std::string digits = h_.substr(start, pos_ - start);
    if (digits.size() > 1 && digits.front() == '0' && digits.find_first_not_of('0') != std::string::npos) {
      pos_ = start;
      malformed("an integer without leading zeros");
    }
    if (digits.size() > kMaxDimDigits) {
      pos_ = start;
      malformed("an integer of at most " + std::to_string(kMaxDimDigits) + " digits");
    }
    if (pos_ < h_.size() && (std::isalpha(static_cast<unsigned char>(h_[pos_])) || h_[pos_] == '_' || h_[pos_] == '.')) {
      malformed("a decimal integer");
    }
    return std::stoll(digits);
  }

  // "(2, 3)", "(3,)", "()", "(2, 3,)"; "(3)" is the integer 3, as in Python.
  HeaderValue parse_tuple() {
    const std::size_t start = pos_++;
    HeaderValue v;
    v.type = HeaderValue::Type::kTuple;
    bool comma = false;
    skip_space();
    while (!at(')')) {
      if (at('-')) {
        const std::size_t minus = pos_++;
        while (at_digit()) ++pos_;
        fail(what_, ": '", path_, "' has a .npy shape entry that is not a non-negative integer: ",
             h_.substr(minus, pos_ - minus));
      }
      v.tuple.push_back(parse_integer());
      skip_space();
      comma = at(',');
      if (comma) {
        ++pos_;
        skip_space();
      } else if (!at(')')) {
        malformed("',' or ')' in a tuple");
      }
    }
    ++pos_;
    v.text = h_.substr(start, pos_ - start);
    if (v.tuple.size() == 1 && !comma) v.type = HeaderValue::Type::kInteger;
    return v;
  }

  const std::string& h_;
  const std::string& what_;
  const std::string& path_;
  std::size_t pos_ = 0;
};

// Reads `size` bytes, or fails naming what was being read.
void read_exactly(std::FILE* f, void* dst, std::size_t size, const std::string& what, const std::string& path,
                  const char* part) {
  if (std::fread(dst, 1, size, f) == size) return;
  if (std::ferror(f)) fail(what, ": could not read ", part, " of '", path, "' (", errno_text(errno), ")");
  fail(what, ": '", path, "' ends inside its ", part);
}

// An opened .npy file whose header has been validated, positioned at its data.
struct OpenedNpy {
  File file;
  std::vector<std::int64_t> shape;
  std::uint64_t payload = 0;  // data bytes, = 4 x the product of shape
};

OpenedNpy open_npy(const std::string& path, const std::string& what) {
  // The type first: a directory opens and reads like an empty file of absurd size on Linux,
  // and a pipe has no size to check the header against.
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  BURST_CHECK(!ec, what, ": cannot open '", path, "' (", ec.message(), ")");
  BURST_CHECK(!std::filesystem::is_directory(status), what, ": '", path, "' is a directory, expected a .npy file");
  BURST_CHECK(std::filesystem::is_regular_file(status), what, ": '", path,
              "' is not a regular file (a pipe, socket or device), expected a .npy file");
  errno = 0;
  File file(std::fopen(path.c_str(), "rb"));
  BURST_CHECK(file != nullptr, what, ": cannot open '", path, "' (", errno_text(errno), ")");
  const std::uint64_t file_size = std::filesystem::file_size(path, ec);
  BURST_CHECK(!ec, what, ": cannot read the size of '", path, "' (", ec.message(), ")");

  char pre[10];
  BURST_CHECK(file_size >= 10, what, ": '", path, "' is too short to be a .npy file (", file_size, " bytes)");
  read_exactly(file.get(), pre, 10, what, path, "header");
  BURST_CHECK(std::memcmp(pre, kMagic, kMagicLen) == 0, what, ": '", path, "' is not a .npy file");
  const auto major = static_cast<unsigned char>(pre[6]);
  std::uint64_t header_len = 0, prefix = 10;
  if (major == 1) {
    header_len = static_cast<unsigned char>(pre[8]) | (static_cast<unsigned char>(pre[9]) << 8);
  } else if (major == 2 || major == 3) {
    unsigned char extra[2];
    read_exactly(file.get(), extra, 2, what, path, "header");
    header_len = static_cast<std::uint64_t>(static_cast<unsigned char>(pre[8])) |
                 static_cast<std::uint64_t>(static_cast<unsigned char>(pre[9])) << 8 |
                 static_cast<std::uint64_t>(extra[0]) << 16 | static_cast<std::uint64_t>(extra[1]) << 24;
    prefix = 12;
  } else {
    fail(what, ": '", path, "' has .npy version ", int{major}, ", expected 1, 2 or 3");
  }
  BURST_CHECK(header_len <= kMaxHeader && prefix + header_len <= file_size, what, ": '", path,
              "' has a header of ", header_len, " bytes but the file is ", file_size, " bytes");
  std::string header(header_len, '\0');
  read_exactly(file.get(), header.data(), header_len, what, path, "header");

  HeaderParser parser(header, what, path);
  const std::map<std::string, HeaderValue> dict = parser.parse_dict();
  for (const auto& [key, value] : dict) {
    BURST_CHECK(key == "descr" || key == "fortran_order" || key == "shape", what, ": '", path,
                "' has a .npy header with the unexpected key '", key,
                "' (expected exactly descr, fortran_order and shape)");
  }
  for (const char* key : {"descr", "fortran_order", "shape"}) {
    BURST_CHECK(dict.count(key) == 1, what, ": '", path, "' has a .npy header without '", key,
                "' (expected exactly descr, fortran_order and shape)");
  }
  const HeaderValue& descr = dict.at("descr");
  BURST_CHECK(descr.type == HeaderValue::Type::kString && descr.string == "<f4", what,
              ": expected float32 ('<f4'), got descr ", descr.text, " in '", path, "'");
  const HeaderValue& order = dict.at("fortran_order");
  BURST_CHECK(order.type == HeaderValue::Type::kBool, what, ": '", path,
              "' has a .npy header whose fortran_order is not True or False: ", order.text);
  BURST_CHECK(!order.boolean, what, ": expected C order, got fortran_order ", order.text, " in '", path, "'");
  const HeaderValue& shape = dict.at("shape");
  BURST_CHECK(shape.type == HeaderValue::Type::kTuple, what, ": '", path,
              "' has a .npy shape that is not a tuple of non-negative integers: ", shape.text);
  OpenedNpy opened;
  opened.shape = shape.tuple;

  const std::uint64_t payload = file_size - prefix - header_len;
  std::uint64_t count = 1;
  for (std::int64_t dim : opened.shape) {
    const auto u = static_cast<std::uint64_t>(dim);
    // Bound the product before multiplying, so a hostile shape cannot overflow it.
    BURST_CHECK(u == 0 || count <= (payload / 4 + 1) / u + 1, what, ": '", path,
                "' declares a shape larger than its ", payload, " data bytes");
    count *= u;
  }
  BURST_CHECK(count * 4 == payload, what, ": '", path, "' declares ", count, " float32 values (",
              count * 4, " bytes) but holds ", payload, " data bytes");
  opened.payload = payload;
  opened.file = std::move(file);
  return opened;
}

}  // namespace

NpyArray read_npy(const std::string& path, const std::string& what) {
  OpenedNpy opened = open_npy(path, what);
  NpyArray array;
  array.shape = std::move(opened.shape);
  array.data.resize(opened.payload / 4);
  read_exactly(opened.file.get(), array.data.data(), opened.payload, what, path, "data");
  return array;
}

std::vector<std::int64_t> read_npy_shape(const std::string& path, const std::string& what) {
  return open_npy(path, what).shape;
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
  BURST_CHECK(header.size() <= 0xffff, "write_npy: a shape of ", shape.size(),
              " dimensions does not fit a version 1.0 .npy header");

  // Every call is checked, the close included: a full disk often shows only when the
  // buffered tail is flushed.
  errno = 0;
  File file(std::fopen(path.c_str(), "wb"));
  if (file == nullptr) throw OutputError("cannot write '" + path + "' (" + errno_text(errno) + ")");
  const auto len = static_cast<std::uint16_t>(header.size());
  const char prefix[10] = {kMagic[0], kMagic[1], kMagic[2], kMagic[3], kMagic[4], kMagic[5], 1, 0,
                           static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  const auto bytes = static_cast<std::size_t>(count) * sizeof(float);
  const bool written = std::fwrite(prefix, 1, sizeof prefix, file.get()) == sizeof prefix &&
                       std::fwrite(header.data(), 1, header.size(), file.get()) == header.size() &&
                       std::fwrite(data, 1, bytes, file.get()) == bytes;
  if (!written) throw OutputError("writing '" + path + "' failed (" + errno_text(errno) + ")");
  if (std::fclose(file.release()) != 0) {
    throw OutputError("writing '" + path + "' failed when closing it (" + errno_text(errno) + ")");
  }
}

}  // namespace burst
