#include "flags.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>

namespace burst::cli {
namespace {

constexpr std::size_t kWidth = 100;   // columns of every help text
constexpr std::size_t kColumn = 30;  // where the help of a flag starts

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string closest(std::string_view got, const std::vector<std::string_view>& candidates) {
  std::string_view best;
  std::size_t best_distance = 0;
  for (std::string_view c : candidates) {
    const std::size_t d = edit_distance(got, c);
    if (best.empty() || d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  // A third of the name may differ ("--seqlem", "--head_dim", "--kvheads"), or the flag may
  // be a prefix ("--seq" of "--seqlen", unique).
  const bool near = !best.empty() && best_distance <= std::max<std::size_t>(2, got.size() / 3);
  if (near) return std::string(best);
  std::string_view prefixed;
  for (std::string_view c : candidates)
    if (got.size() >= 4 && c.starts_with(got)) {
      if (!prefixed.empty()) return {};
      prefixed = c;
    }
  return std::string(prefixed);
}

void unknown_flag(std::string_view command, std::string_view arg, const std::vector<std::string_view>& names) {
  const std::string_view name = arg.substr(0, arg.find('='));
  const std::string guess = name.starts_with("-") ? closest(name, names) : std::string();
  std::string hint;
  if (!guess.empty()) hint.append("; did you mean ").append(guess).append("?");
  fail("arguments: expected a flag listed by 'burst ", command, " --help', got '", arg, "'", hint);
}

std::string_view flag_value(std::string_view name, std::string_view placeholder, std::string_view inline_value,
                            bool has_inline, std::span<char* const> args, std::size_t& i) {
  std::string_view value = inline_value;
  if (!has_inline) {
    BURST_CHECK(i + 1 < args.size(), name, ": expected a value ", placeholder, ", got the end of the arguments");
    value = args[++i];
    BURST_CHECK(!value.starts_with("--"), name, ": expected a value ", placeholder, ", got the flag '", value, "'");
  }
  BURST_CHECK(!value.empty(), name, ": expected a value ", placeholder, ", got ''");
  return value;
}

std::string wrap(std::string_view text, std::size_t width, std::size_t indent, std::size_t first_column) {
  std::string out;
  std::size_t column = first_column;
  std::istringstream words{std::string(text)};
  std::string word;
  bool line_start = true;
  while (words >> word) {
    if (!line_start && column + 1 + word.size() > width) {
      out.append(1, '\n').append(indent, ' ');
      column = indent;
      line_start = true;
    }
    if (!line_start) {
      out += ' ';
      ++column;
    }
    out += word;
    column += word.size();
    line_start = false;
  }
  return out;
}

std::string usage_text(std::string_view command, std::string_view description, const std::vector<FlagRow>& rows,
                       std::string_view epilogue) {
  std::ostringstream os;
  os << "usage: burst " << command << " [flags]\n";
  // Paragraphs of the description are separated by blank lines and wrapped alike.
  std::size_t start = 0;
  while (start <= description.size()) {
    const std::size_t end = std::min(description.find("\n\n", start), description.size());
    os << wrap(description.substr(start, end - start), kWidth, 0, 0) << "\n";
    if (end == description.size()) break;
    os << "\n";
    start = end + 2;
  }
  os << "\nflags:\n";
  for (const FlagRow& r : rows) {
    std::string left(2, ' ');  // built by appending: GCC 12 misreads "  " + ... (-Wrestrict)
    left.append(r.name);
    if (!r.value.empty()) left.append(1, ' ').append(r.value);
    if (left.size() + 2 > kColumn) {
      // A long value list (--strategy local|burst|...) gets a line of its own.
      os << left << "\n" << std::string(kColumn, ' ');
    } else {
      os << left << std::string(kColumn - left.size(), ' ');
    }
    os << wrap(r.help, kWidth, kColumn, kColumn) << "\n";
  }
  if (!epilogue.empty()) os << "\n" << epilogue;
  return os.str();
}

std::pair<std::int64_t, std::int64_t> parse_window_sides(std::string_view flag, std::string_view text) {
  constexpr std::int64_t kMaxWindow = std::int64_t{1} << 40;
  const auto comma = text.find(',');
  BURST_CHECK(comma != std::string_view::npos, flag,
              ": expected two integers LEFT,RIGHT separated by a comma, got '", text, "'");
  const auto side = [&](std::string_view part) {
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    BURST_CHECK(ec == std::errc() && end == part.data() + part.size(), flag,
                ": expected two integers LEFT,RIGHT separated by a comma, got '", text, "'");
    BURST_CHECK(value <= kMaxWindow, flag, ": expected sides of at most ", kMaxWindow, " (or negative: unbounded), got ",
                value);
    return value < 0 ? std::int64_t{-1} : value;
  };
  return {side(text.substr(0, comma)), side(text.substr(comma + 1))};
}

std::int64_t parse_tokens(std::string_view flag, std::string_view text) {
  std::int64_t unit = 1;
  std::string_view digits = text;
  if (!text.empty() && (text.back() == 'K' || text.back() == 'k')) unit = 1024;
  if (!text.empty() && (text.back() == 'M' || text.back() == 'm')) unit = 1024 * 1024;
  if (unit != 1) digits.remove_suffix(1);
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  BURST_CHECK(ec == std::errc() && end == digits.data() + digits.size() && value >= 1 && value <= (std::int64_t{1} << 32) / unit,
              flag, ": expected a positive integer with an optional K or M suffix, got '", text, "'");
  return value * unit;
}

std::int64_t parse_count_at_most(std::string_view flag, std::string_view text, std::int64_t max) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  BURST_CHECK(ec == std::errc() && end == text.data() + text.size() && value >= 1 && value <= max, flag,
              ": expected an integer in [1, ", max, "], got '", text, "'");
  return value;
}

double parse_real(std::string_view flag, std::string_view text, bool suffixes) {
  double unit = 1;
  std::string_view digits = text;
  if (suffixes && !text.empty()) {
    switch (text.back()) {
      case 'K': unit = 1e3; break;
      case 'M': unit = 1e6; break;
      case 'G': unit = 1e9; break;
      case 'T': unit = 1e12; break;
      default: break;
    }
    if (unit != 1) digits.remove_suffix(1);
  }
  double value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  BURST_CHECK(ec == std::errc() && end == digits.data() + digits.size() && std::isfinite(value) && value > 0, flag,
              ": expected a positive number", suffixes ? " (optional suffix K, M, G, T)" : "", ", got '", text, "'");
  return value * unit;
}

}  // namespace burst::cli
