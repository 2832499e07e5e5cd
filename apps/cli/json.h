// The minimal JSON object writer behind `burst run --json`.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>

namespace burst::cli {

// Formats x for files that programs read back (JSON, CSV): integral values as integers, exact
// up to 2^53 (where doubles stop holding every integer; a byte count as "1.07374182e+09"
// loses its last digits), others with 9 significant digits ("3.2e-07", never "0.000000"),
// in the C locale whatever the process's. Non-finite values give "nan", "inf", "-inf".
inline std::string format_number(double x) {
  char buf[32];
  const std::to_chars_result r =
      std::isfinite(x) && x == std::trunc(x) && std::fabs(x) < 9007199254740992.0
          ? std::to_chars(buf, buf + sizeof buf, static_cast<std::int64_t>(x))
          : std::to_chars(buf, buf + sizeof buf, x, std::chars_format::general, 9);
  return std::string(buf, r.ptr);
}

// Minimal JSON writer: keys in insertion order, comma handling, numbers by format_number,
// non-finite numbers as null.
class JsonObject {
 public:
  void number(const char* key, double x) { raw(key, std::isfinite(x) ? format_number(x) : "null"); }
  void integer(const char* key, std::int64_t x) { raw(key, std::to_string(x)); }
  void boolean(const char* key, bool x) { raw(key, x ? "true" : "false"); }
  void string(const char* key, const std::string& s) { raw(key, quote(s)); }
  void optional(const char* key, const std::optional<double>& x) {
    if (x) {
      number(key, *x);
    } else {
      raw(key, "null");
    }
  }
  void raw(const char* key, const std::string& value) {
    body_ += (body_.empty() ? "\n  " : ",\n  ") + quote(key) + ": " + value;
  }
  std::string text() const { return "{" + body_ + "\n}\n"; }

  static std::string quote(const std::string& s) {
    std::string out = "\"";
    for (const char c : s) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
        out += buf;
      } else {
        out += c;
      }
    }
    return out + "\"";
  }

 private:
  std::string body_;
};

}  // namespace burst::cli
