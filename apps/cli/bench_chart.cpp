#include "bench_chart.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace burst::cli {

// One chart: a log-log plot per panel (time, bytes), one line per strategy.
std::string svg_text(const std::string& title, const std::vector<Point>& points,
               const std::vector<std::string>& strategies) {
  constexpr double kW = 460, kH = 320, kLeft = 70, kRight = 20, kTop = 40, kBottom = 50;
  static const char* colors[] = {"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"};
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << 2 * kW + 160 << "\" height=\"" << kH + 30
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      << "<text x=\"10\" y=\"20\" font-size=\"14\">" << title << "</text>\n";
  struct Panel {
    const char* name;
    double (*value)(const Point&);
  };
  const Panel panels[] = {{"forward + backward time (s)", [](const Point& p) { return p.forward_s + p.backward_s; }},
                          {"bytes sent per rank, fwd + bwd (MB)",
                           [](const Point& p) { return (p.forward_bytes + p.backward_bytes) / 1e6; }}};
  double x_min = 1e300, x_max = 0;
  for (const Point& p : points)
    if (p.skipped.empty()) {
      x_min = std::min(x_min, static_cast<double>(p.seqlen));
      x_max = std::max(x_max, static_cast<double>(p.seqlen));
    }
  if (x_max <= 0) return {};  // every point skipped: no chart
  if (x_max == x_min) x_max = x_min * 2;
  for (int panel = 0; panel < 2; ++panel) {
    const double ox = panel * kW;
    double y_min = 1e300, y_max = 0;
    for (const Point& p : points)
      if (p.skipped.empty() && panels[panel].value(p) > 0) {
        y_min = std::min(y_min, panels[panel].value(p));
        y_max = std::max(y_max, panels[panel].value(p));
      }
    if (y_max <= 0) continue;
    y_min = std::pow(10.0, std::floor(std::log10(y_min)));
    y_max = std::pow(10.0, std::ceil(std::log10(y_max)));
    if (y_max <= y_min) y_max = y_min * 10;
    auto sx = [&](double x) { return ox + kLeft + (std::log2(x) - std::log2(x_min)) / (std::log2(x_max) - std::log2(x_min)) * (kW - kLeft - kRight); };
    auto sy = [&](double y) { return kTop + (1 - (std::log10(y) - std::log10(y_min)) / (std::log10(y_max) - std::log10(y_min))) * (kH - kTop - kBottom); };
    svg << "<text x=\"" << ox + kLeft << "\" y=\"" << kTop - 8 << "\">" << panels[panel].name << "</text>\n";
    svg << "<rect x=\"" << ox + kLeft << "\" y=\"" << kTop << "\" width=\"" << kW - kLeft - kRight << "\" height=\""
        << kH - kTop - kBottom << "\" fill=\"none\" stroke=\"#999\"/>\n";
    for (double y = y_min; y <= y_max * 1.001; y *= 10) {
      svg << "<line x1=\"" << ox + kLeft << "\" x2=\"" << ox + kW - kRight << "\" y1=\"" << sy(y) << "\" y2=\"" << sy(y)
          << "\" stroke=\"#eee\"/><text x=\"" << ox + kLeft - 6 << "\" y=\"" << sy(y) + 4 << "\" text-anchor=\"end\">" << y
          << "</text>\n";
    }
    std::vector<std::int64_t> xs;
    for (const Point& p : points) xs.push_back(p.seqlen);
    std::sort(xs.begin(), xs.end());
    xs.erase(std::unique(xs.begin(), xs.end()), xs.end());
    for (std::int64_t x : xs)
      svg << "<text x=\"" << sx(static_cast<double>(x)) << "\" y=\"" << kH - kBottom + 16 << "\" text-anchor=\"middle\">"
          << x << "</text>\n";
    svg << "<text x=\"" << ox + (kW + kLeft) / 2 << "\" y=\"" << kH - 12 << "\" text-anchor=\"middle\">sequence length (tokens)</text>\n";
    for (std::size_t si = 0; si < strategies.size(); ++si) {
      std::string line;
      for (const Point& p : points)
        if (p.strategy == strategies[si] && p.skipped.empty() && panels[panel].value(p) > 0) {
          // Appended piece by piece: GCC 12 misreads "" + std::string(...) (-Wrestrict).
          if (!line.empty()) line += ' ';
          line += std::to_string(sx(static_cast<double>(p.seqlen)));
          line += ',';
          line += std::to_string(sy(panels[panel].value(p)));
        }
      if (line.empty()) continue;
      const char* color = colors[si % 8];
      svg << "<polyline points=\"" << line << "\" fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\"/>\n";
      std::istringstream pts(line);
      std::string xy;
      while (pts >> xy) {
        const auto comma = xy.find(',');
        svg << "<circle cx=\"" << xy.substr(0, comma) << "\" cy=\"" << xy.substr(comma + 1) << "\" r=\"3\" fill=\"" << color
            << "\"/>\n";
      }
    }
  }
  for (std::size_t si = 0; si < strategies.size(); ++si) {
    const double y = kTop + 18.0 * static_cast<double>(si);
    svg << "<rect x=\"" << 2 * kW + 10 << "\" y=\"" << y - 9 << "\" width=\"14\" height=\"4\" fill=\"" << colors[si % 8]
        << "\"/><text x=\"" << 2 * kW + 30 << "\" y=\"" << y << "\">" << strategies[si] << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace burst::cli
