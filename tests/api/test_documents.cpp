// Packed documents' lengths (burst/documents.h): boundaries and lengths, lists and files of
// lengths with their errors, the named distributions (exact totals, seeded, the same on every
// machine, the documented shapes) and the work ratio against brute-force pair counts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include "burst/documents.h"
#include "burst/error.h"

namespace burst {
namespace {

using Lengths = std::vector<std::int64_t>;

// The message of the burst::Error that fn throws ("" and a test failure when none).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a burst::Error";
  return "";
}

std::int64_t sum(const Lengths& l) { return std::accumulate(l.begin(), l.end(), std::int64_t{0}); }

TEST(Documents, BoundariesAndLengthsRoundTrip) {
  const Lengths lengths{3, 1, 4, 1, 5};
  const Lengths bounds = algo::document_boundaries(lengths);
  EXPECT_EQ(bounds, (Lengths{0, 3, 4, 8, 9, 14}));
  EXPECT_EQ(algo::document_lengths(bounds), lengths);
  EXPECT_EQ(algo::document_boundaries(Lengths{7}), (Lengths{0, 7}));
}

TEST(Documents, BadLengthsNameTheArgumentAndIndex) {
  EXPECT_EQ(error_of([] { algo::document_boundaries(Lengths{3, 0, 4}, "--doc-lens"); }),
            "--doc-lens: expected every document length >= 1, got 0 at index 1");
  EXPECT_EQ(error_of([] { algo::document_boundaries(Lengths{-2}, "x"); }),
            "x: expected every document length >= 1, got -2 at index 0");
  EXPECT_EQ(error_of([] { algo::document_boundaries(Lengths{}, "x"); }), "x: expected at least one document length, got none");
  EXPECT_NE(error_of([] { algo::document_lengths(Lengths{0, 4, 4}); }).find("documents: expected increasing boundaries"),
            std::string::npos);
  EXPECT_NE(error_of([] { algo::document_lengths(Lengths{1, 4}); }).find("the first boundary to be 0, got 1"),
            std::string::npos);
}

TEST(Documents, ParsesListsOfLengths) {
  EXPECT_EQ(algo::parse_document_lengths("100,28,1"), (Lengths{100, 28, 1}));
  EXPECT_EQ(algo::parse_document_lengths("5"), (Lengths{5}));
  EXPECT_EQ(error_of([] { algo::parse_document_lengths("3,,4", "--doc-lens"); }),
            "--doc-lens: expected positive integers separated by commas, got '' at item 2");
  EXPECT_EQ(error_of([] { algo::parse_document_lengths("3,4,0", "--doc-lens"); }),
            "--doc-lens: expected positive integers separated by commas, got '0' at item 3");
  EXPECT_EQ(error_of([] { algo::parse_document_lengths("3,1.5", "--doc-lens"); }),
            "--doc-lens: expected positive integers separated by commas, got '1.5' at item 2");
}

class DocumentFiles : public ::testing::Test {
 protected:
  std::filesystem::path dir = std::filesystem::temp_directory_path() / ("burst_documents_" + std::to_string(::getpid()));
  void SetUp() override { std::filesystem::create_directories(dir); }
  void TearDown() override { std::filesystem::remove_all(dir); }
  std::string write(const std::string& name, const std::string& text) {
    const auto path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
};

TEST_F(DocumentFiles, ReadsLengthsWithCommentsAndBlankLines) {
  const std::string path = write("ok.txt", "# lengths of one packed batch\n\n 120\n7   # a short one\r\n\t3\n\n# end\n");
  EXPECT_EQ(algo::read_document_lengths(path), (Lengths{120, 7, 3}));
  EXPECT_EQ(algo::read_document_lengths(write("last.txt", "5\n6")), (Lengths{5, 6}));  // no final newline
}

TEST_F(DocumentFiles, ErrorsNameTheFileAndLine) {
  const std::string bad = write("bad.txt", "10\n\n12abc\n");
  EXPECT_EQ(error_of([&] { algo::read_document_lengths(bad, "--doc-lens-from"); }),
            "--doc-lens-from: " + bad + " line 3: expected one positive integer document length, got '12abc'");
  const std::string zero = write("zero.txt", "# header\n0\n");
  EXPECT_EQ(error_of([&] { algo::read_document_lengths(zero, "f"); }),
            "f: " + zero + " line 2: expected one positive integer document length, got '0'");
  const std::string two = write("two.txt", "4 5\n");
  EXPECT_NE(error_of([&] { algo::read_document_lengths(two, "f"); }).find("line 1: expected one positive integer"),
            std::string::npos);
  const std::string empty = write("empty.txt", "# nothing\n\n");
  EXPECT_EQ(error_of([&] { algo::read_document_lengths(empty, "f"); }),
            "f: " + empty + ": expected at least one document length, got none");
  const std::string missing = (dir / "none.txt").string();
  EXPECT_EQ(error_of([&] { algo::read_document_lengths(missing, "f"); }),
            "f: cannot open '" + missing + "' (expected a text file of document lengths)");
}

TEST(DocumentDistributions, SumExactlyToTheTotal) {
  ASSERT_EQ(algo::document_distributions().size(), 4u);
  for (const algo::DocumentDistribution& d : algo::document_distributions()) {
    for (const std::int64_t total : {1, 2, 7, 999, 100000}) {
      for (std::uint64_t seed : {0u, 1u, 42u}) {
        const Lengths l = algo::draw_document_lengths(d.name, total, seed);
        EXPECT_EQ(sum(l), total) << d.name << " total " << total << " seed " << seed;
        EXPECT_GE(*std::min_element(l.begin(), l.end()), 1) << d.name;
        // Only the last document is cut: every other one is a whole draw of the law.
        for (std::size_t i = 0; i + 1 < l.size(); ++i) EXPECT_LE(l[i], total);
      }
    }
  }
}

TEST(DocumentDistributions, SeededAndTheSameOnEveryMachine) {
  for (const algo::DocumentDistribution& d : algo::document_distributions()) {
    EXPECT_EQ(algo::draw_document_lengths(d.name, 50000, 7), algo::draw_document_lengths(d.name, 50000, 7)) << d.name;
    if (d.name != "fixed") {
      EXPECT_NE(algo::draw_document_lengths(d.name, 50000, 7), algo::draw_document_lengths(d.name, 50000, 8)) << d.name;
    }
  }
  // Pinned draws: std::mt19937_64 is fixed by the standard and the transforms are this
  // library's, so these hold on any standard library (std:: distributions would not).
  auto first = [](const char* name) {
    Lengths l = algo::draw_document_lengths(name, 1000000, 1);
    l.resize(6);
    return l;
  };
  EXPECT_EQ(first("uniform"), (Lengths{275, 280, 925, 44, 719, 1867}));
  EXPECT_EQ(first("pretrain"), (Lengths{2416, 2242, 2184, 1862, 216, 42}));
  EXPECT_EQ(first("pareto"), (Lengths{601, 593, 236, 2497, 286, 137}));
}

double median(Lengths l) {
  std::sort(l.begin(), l.end());
  return static_cast<double>(l[l.size() / 2]);
}

TEST(DocumentDistributions, ShapesAsDocumented) {
  constexpr std::int64_t kTotal = 20000000;
  const Lengths pre = algo::draw_document_lengths("pretrain", kTotal, 3);
  Lengths whole(pre.begin(), pre.end() - 1);  // the last one is cut
  const double mean = static_cast<double>(sum(whole)) / static_cast<double>(whole.size());
  // Lognormal, median 500, sigma 1.2: mean 500 e^0.72 = 1027, a tail to tens of thousands.
  EXPECT_NEAR(median(whole), 500.0, 25.0);
  EXPECT_NEAR(mean, 1027.0, 60.0);
  EXPECT_GT(static_cast<double>(*std::max_element(whole.begin(), whole.end())) / median(whole), 40.0);
  // Pareto, minimum 128, alpha 1.3: median 128 * 2^(1/1.3) = 218, nothing under the minimum.
  const Lengths par = algo::draw_document_lengths("pareto", kTotal, 3);
  EXPECT_NEAR(median(par), 218.0, 12.0);
  EXPECT_GE(*std::min_element(par.begin(), par.end() - 1), 128);
  EXPECT_GT(static_cast<double>(*std::max_element(par.begin(), par.end())) / median(par), 200.0);
  const Lengths uni = algo::draw_document_lengths("uniform", 1000000, 3);
  EXPECT_LE(*std::max_element(uni.begin(), uni.end()), 2048);
  EXPECT_NEAR(median(uni), 1024.0, 60.0);
  const Lengths fixed = algo::draw_document_lengths("fixed", 5000, 3);
  EXPECT_EQ(fixed, (Lengths{1024, 1024, 1024, 1024, 904}));
}

TEST(DocumentDistributions, LengthParameterAndErrors) {
  EXPECT_EQ(algo::draw_document_lengths("fixed:100", 250, 0), (Lengths{100, 100, 50}));
  const Lengths uni = algo::draw_document_lengths("uniform:3", 10000, 0);
  EXPECT_LE(*std::max_element(uni.begin(), uni.end()), 3);
  EXPECT_NEAR(median(algo::draw_document_lengths("pretrain:4000", 20000000, 1)), 4000.0, 250.0);
  // A long-tailed draw is clipped to the sequence: one document.
  EXPECT_EQ(algo::draw_document_lengths("fixed:5000", 300, 0), (Lengths{300}));
  EXPECT_EQ(error_of([] { algo::draw_document_lengths("lognormal", 100, 0, "--doc-dist"); }),
            "--doc-dist: expected one of pretrain, pareto, uniform, fixed (optionally NAME:L), got 'lognormal'");
  EXPECT_EQ(error_of([] { algo::draw_document_lengths("fixed:0", 100, 0, "--doc-dist"); }),
            "--doc-dist: expected fixed:L with L (the length) a positive integer, got 'fixed:0'");
  EXPECT_EQ(error_of([] { algo::draw_document_lengths("pretrain:", 100, 0, "--doc-dist"); }),
            "--doc-dist: expected pretrain:L with L (the median) a positive integer, got 'pretrain:'");
}

// Visible pairs by brute force over every (query, key) of n tokens.
double brute_pairs(const kernels::MaskSpec& mask, std::int64_t n) {
  double pairs = 0;
  for (std::int64_t q = 0; q < n; ++q)
    for (std::int64_t k = 0; k < n; ++k) pairs += mask.visible(q, k) ? 1 : 0;
  return pairs;
}

TEST(DocumentWork, RatioOfVisiblePairs) {
  const Lengths bounds = algo::document_boundaries(Lengths{3, 1, 4});
  kernels::MaskSpec causal;
  causal.causal = true;
  causal.documents = bounds;
  // Causal: (6 + 1 + 10) of 36 pairs; bidirectional: (9 + 1 + 16) of 64.
  EXPECT_DOUBLE_EQ(algo::document_work_ratio(causal, 8), 17.0 / 36.0);
  kernels::MaskSpec full;
  full.documents = bounds;
  EXPECT_DOUBLE_EQ(algo::document_work_ratio(full, 8), 26.0 / 64.0);
  EXPECT_DOUBLE_EQ(algo::document_work_ratio(kernels::MaskSpec{}, 8), 1.0);
  // Drawn documents under causal + window, against brute force.
  const Lengths drawn = algo::document_boundaries(algo::draw_document_lengths("pretrain:40", 300, 5));
  kernels::MaskSpec m;
  m.causal = true;
  m.window_left = 50;
  m.documents = drawn;
  kernels::MaskSpec one = m;
  one.documents = {};
  EXPECT_DOUBLE_EQ(algo::document_work_ratio(m, 300), brute_pairs(m, 300) / brute_pairs(one, 300));
  EXPECT_LT(algo::document_work_ratio(m, 300), 1.0);
  EXPECT_NE(error_of([&] { algo::document_work_ratio(m, 299); }).find("the last boundary to be the sequence length 299"),
            std::string::npos);
}

}  // namespace
}  // namespace burst
