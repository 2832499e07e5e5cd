// Flag tables of the `burst` subcommands (run, bench, plan): one row per flag with its value
// syntax, help text and the function that stores it, so parsing, "did you mean" and the help
// text cannot drift apart, and every subcommand parses and prints help alike.
#pragma once

#include <cstdint>
#include <utility>

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "burst/error.h"

namespace burst::cli {

template <class Args>
struct Flag {
  std::string_view name;   // "--seqlen"
  std::string_view value;  // placeholder shown in the help ("S"); empty for a switch
  std::string_view help;
  void (*apply)(Args& args, std::string_view flag, std::string_view value);
};

// The closest of `candidates` to `got` by edit distance, or "" when none is close enough to be
// what was meant.
std::string closest(std::string_view got, const std::vector<std::string_view>& candidates);

// Throws "arguments: expected a flag listed by 'burst COMMAND --help', got 'ARG'", adding
// "; did you mean --X?" when one flag is close.
[[noreturn]] void unknown_flag(std::string_view command, std::string_view arg,
                               const std::vector<std::string_view>& names);

// The value of a flag taking one: from "--flag=value" (`inline_value`) or the next argument,
// which must exist, be non-empty and not be a flag ("--save --json x" forgot a value).
std::string_view flag_value(std::string_view name, std::string_view placeholder, std::string_view inline_value,
                            bool has_inline, std::span<char* const> args, std::size_t& i);

// Help text: "usage: burst COMMAND [flags]", the description, then one row per flag with help
// wrapped at 100 columns (a long flag name puts its help on the next line).
struct FlagRow {
  std::string_view name, value, help;
};
std::string usage_text(std::string_view command, std::string_view description, const std::vector<FlagRow>& rows,
                       std::string_view epilogue = {});
// `text` wrapped at `width` columns, each line after the first starting with `indent` spaces.
std::string wrap(std::string_view text, std::size_t width, std::size_t indent, std::size_t first_column);

// A sliding window's sides "LEFT,RIGHT" (--window of run and plan): integers, a negative side
// unbounded (returned as -1), a side at most 2^40 (past any sequence; it keeps the kernels'
// position arithmetic far from overflow). Throws naming `flag` otherwise.
std::pair<std::int64_t, std::int64_t> parse_window_sides(std::string_view flag, std::string_view text);

// Flag values shared by the subcommands' tables; each throws naming `flag`.
// An integer from 1 to 2^32 with an optional binary suffix K (1024) or M (1048576): "32K",
// "1M", "4096".
std::int64_t parse_tokens(std::string_view flag, std::string_view text);
// An integer in [1, max].
std::int64_t parse_count_at_most(std::string_view flag, std::string_view text, std::int64_t max);
// A positive finite number; with `suffixes`, an optional decimal K, M, G or T (1e3 .. 1e12).
double parse_real(std::string_view flag, std::string_view text, bool suffixes = false);
// fn(item) for each comma-separated item of `text` (empty items included).
template <class Fn>
void for_each_item(std::string_view text, Fn&& fn) {
  std::size_t start = 0;
  while (true) {
    const auto comma = text.find(',', start);
    fn(text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) return;
    start = comma + 1;
  }
}

// Parses args against `table` ("--flag value" and "--flag=value"); returns the names given,
// in order.
template <class Args>
std::vector<std::string> parse_flags(std::string_view command, std::span<const Flag<Args>> table,
                                     std::span<char* const> args, Args& out) {
  std::vector<std::string> given;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    const auto eq = arg.find('=');
    const std::string_view name = arg.substr(0, eq);
    const Flag<Args>* flag = nullptr;
    if (arg.starts_with("--"))
      for (const Flag<Args>& f : table)
        if (f.name == name) flag = &f;
    if (flag == nullptr) {
      std::vector<std::string_view> names;
      for (const Flag<Args>& f : table) names.push_back(f.name);
      unknown_flag(command, arg, names);
    }
    std::string_view value;
    if (flag->value.empty()) {
      BURST_CHECK(eq == std::string_view::npos, name, ": expected no value, got '", arg.substr(eq + 1), "'");
    } else {
      value = flag_value(name, flag->value, eq == std::string_view::npos ? std::string_view() : arg.substr(eq + 1),
                         eq != std::string_view::npos, args, i);
    }
    flag->apply(out, name, value);
    given.emplace_back(name);
  }
  return given;
}

template <class Args>
std::string flag_usage(std::string_view command, std::string_view description, std::span<const Flag<Args>> table,
                       std::string_view epilogue = {}) {
  std::vector<FlagRow> rows;
  for (const Flag<Args>& f : table) rows.push_back({f.name, f.value, f.help});
  return usage_text(command, description, rows, epilogue);
}

}  // namespace burst::cli
