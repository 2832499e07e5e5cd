// The minimal JSON object writer behind `burst run --json`.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <sstream>
#include <string>

namespace burst::cli {

// Minimal JSON writer: keys in insertion order, comma handling, non-finite numbers as null.
class JsonObject {
 public:
  void number(const char* key, double x) {
    if (std::isfinite(x)) {
      std::ostringstream os;
      os.precision(9);
      os << x;
      raw(key, os.str());
    } else {
      raw(key, "null");
    }
  }
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
