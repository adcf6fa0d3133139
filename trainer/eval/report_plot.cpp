#include "trainer/eval/report_plot.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "trainer/eval/report_format.h"
#include "trainer/eval/report_html.h"

namespace lookahead::trainer::report {
namespace {

// Axis from `low` to `high` on multiples of a 1/2/5 x 10^k step, about five ticks.
struct Axis {
  double min = 0, max = 1, step = 0.2;
  int decimals = 1;
};

Axis nice_axis(double low, double high, double min_span) {
  if (high - low < min_span) {
    const double mid = (low + high) / 2;
    low = mid - min_span / 2;
    high = mid + min_span / 2;
  } else {
    const double pad = (high - low) * 0.08;
    low -= pad;
    high += pad;
  }
  const double raw = (high - low) / 5;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double f : {1.0, 2.0, 5.0, 10.0}) {
    step = f * magnitude;
    if (step >= raw) break;
  }
  Axis axis;
  axis.step = step;
  axis.min = std::floor(low / step) * step;
  axis.max = std::ceil(high / step) * step;
  axis.decimals = std::max(0, static_cast<int>(-std::floor(std::log10(step) + 1e-9)));
  return axis;
}

const char* palette(size_t i) {
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                 "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return colors[i % 10];
}

struct Point {
  std::string label;
  size_t index = 0;
  Stat clip, id;
};

}  // namespace

void write_scatter(std::ostream& out, const std::vector<ReportEntry>& entries, const std::vector<Row>& rows) {
  std::vector<Point> points;
  std::vector<std::string> skipped;
  for (size_t i = 0; i < entries.size(); ++i) {
    Point p{entries[i].label, i, rows[i].stats.at("clip_score"), rows[i].stats.at("id_similarity")};
    if (p.clip.mean && p.id.mean)
      points.push_back(p);
    else
      skipped.push_back(entries[i].label);
  }
  double x_lo = INFINITY, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  for (const Point& p : points) {
    x_lo = std::min({x_lo, *p.clip.mean, p.clip.low.value_or(*p.clip.mean)});
    x_hi = std::max({x_hi, *p.clip.mean, p.clip.high.value_or(*p.clip.mean)});
    y_lo = std::min({y_lo, *p.id.mean, p.id.low.value_or(*p.id.mean)});
    y_hi = std::max({y_hi, *p.id.mean, p.id.high.value_or(*p.id.mean)});
  }
  if (points.empty()) {
    x_lo = 0, x_hi = 40, y_lo = 0, y_hi = 1;
  }
  // CLIP scores live on 0..100 and ID similarities on -1..1: the minimum spans keep a single
  // point (or identical points) from collapsing the axis.
  const Axis x = nice_axis(x_lo, x_hi, 2.0);
  const Axis y = nice_axis(y_lo, y_hi, 0.1);

  const double width = 720, height = 440, left = 72, right = 690, top = 20, bottom = 380;
  auto px = [&](double v) { return left + (v - x.min) / (x.max - x.min) * (right - left); };
  auto py = [&](double v) { return bottom - (v - y.min) / (y.max - y.min) * (bottom - top); };
  auto f2 = [](double v) { return fixed(v, 2); };

  out << "<h2>ID similarity vs CLIP score</h2>\n"
      << "<svg id=\"id-vs-clip\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height << "\" data-x-min=\"" << x.min << "\" data-x-max=\"" << x.max
      << "\" data-y-min=\"" << y.min << "\" data-y-max=\"" << y.max << "\" data-left=\"" << left << "\" data-right=\""
      << right << "\" data-top=\"" << top << "\" data-bottom=\"" << bottom << "\">\n"
      << "<rect x=\"0\" y=\"0\" width=\"" << width << "\" height=\"" << height << "\" fill=\"#ffffff\"/>\n";
  // Grid lines and ticks.
  const int x_ticks = static_cast<int>(std::lround((x.max - x.min) / x.step));
  for (int i = 0; i <= x_ticks; ++i) {
    const double v = x.min + i * x.step;
    out << "<line class=\"grid-x\" x1=\"" << f2(px(v)) << "\" y1=\"" << top << "\" x2=\"" << f2(px(v)) << "\" y2=\""
        << bottom << "\" stroke=\"#e4e4e4\"/>"
        << "<text class=\"tick-x\" x=\"" << f2(px(v)) << "\" y=\"" << bottom + 18
        << "\" text-anchor=\"middle\" font-size=\"12\">" << fixed(v, x.decimals) << "</text>\n";
  }
  const int y_ticks = static_cast<int>(std::lround((y.max - y.min) / y.step));
  for (int i = 0; i <= y_ticks; ++i) {
    const double v = y.min + i * y.step;
    out << "<line class=\"grid-y\" x1=\"" << left << "\" y1=\"" << f2(py(v)) << "\" x2=\"" << right << "\" y2=\""
        << f2(py(v)) << "\" stroke=\"#e4e4e4\"/>"
        << "<text class=\"tick-y\" x=\"" << left - 8 << "\" y=\"" << f2(py(v) + 4)
        << "\" text-anchor=\"end\" font-size=\"12\">" << fixed(v, y.decimals) << "</text>\n";
  }
  out << "<rect class=\"frame\" x=\"" << left << "\" y=\"" << top << "\" width=\"" << right - left << "\" height=\""
      << bottom - top << "\" fill=\"none\" stroke=\"#444\"/>\n"
      << "<text class=\"axis-label\" x=\"" << (left + right) / 2 << "\" y=\"" << height - 12
      << "\" text-anchor=\"middle\" font-size=\"14\">CLIP score (" << kTimes << "100) \xE2\x86\x92</text>\n"
      << "<text class=\"axis-label\" x=\"18\" y=\"" << (top + bottom) / 2 << "\" transform=\"rotate(-90 18 "
      << (top + bottom) / 2 << ")\" text-anchor=\"middle\" font-size=\"14\">ID similarity \xE2\x86\x92</text>\n";
  for (const Point& p : points) {
    const char* color = palette(p.index);
    const double cx = px(*p.clip.mean), cy = py(*p.id.mean);
    const std::string label = escape_html(p.label);
    if (p.clip.low && p.clip.high)
      out << "<line class=\"error-x\" data-label=\"" << label << "\" x1=\"" << f2(px(*p.clip.low)) << "\" y1=\""
          << f2(cy) << "\" x2=\"" << f2(px(*p.clip.high)) << "\" y2=\"" << f2(cy) << "\" stroke=\"" << color
          << "\" stroke-width=\"1.5\"/>\n";
    if (p.id.low && p.id.high)
      out << "<line class=\"error-y\" data-label=\"" << label << "\" x1=\"" << f2(cx) << "\" y1=\"" << f2(py(*p.id.low))
          << "\" x2=\"" << f2(cx) << "\" y2=\"" << f2(py(*p.id.high)) << "\" stroke=\"" << color
          << "\" stroke-width=\"1.5\"/>\n";
    out << "<circle class=\"point\" data-label=\"" << label << "\" data-x=\"" << *p.clip.mean << "\" data-y=\""
        << *p.id.mean << "\" cx=\"" << f2(cx) << "\" cy=\"" << f2(cy) << "\" r=\"5\" fill=\"" << color
        << "\"><title>" << label << ": CLIP " << fixed(*p.clip.mean, 2) << ", ID " << fixed(*p.id.mean, 3)
        << "</title></circle>\n";
    // Labels go left of points in the right quarter so that they stay inside the frame.
    const bool flip = cx > left + 0.75 * (right - left);
    out << "<text class=\"point-label\" x=\"" << f2(flip ? cx - 8 : cx + 8) << "\" y=\"" << f2(cy - 8)
        << "\" text-anchor=\"" << (flip ? "end" : "start") << "\" font-size=\"12\" fill=\"" << color << "\">" << label
        << "</text>\n";
  }
  out << "</svg>\n";
  if (!skipped.empty()) {
    out << "<p class=\"not-plotted\">Not plotted (no generation with a detected face): ";
    for (size_t i = 0; i < skipped.size(); ++i) out << (i ? ", " : "") << escape_html(skipped[i]);
    out << "</p>\n";
  }
  out << "<p class=\"note\">Error bars: 95 % confidence intervals.</p>\n";
}

}  // namespace lookahead::trainer::report
