// The evaluation report: metrics.json validation, the summary table and its best values, the
// ID-vs-CLIP scatter plot (inline SVG), per-prompt tables, per-identity image grids and
// comparison.json. The page has no script: it is meant to be archived next to the images.
#include "trainer/eval/eval_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>

namespace lookahead::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kFormat = "lookahead-eval";
constexpr int64_t kVersion = 1;

// ---- schema -------------------------------------------------------------------------------------

enum class Kind { kString, kInteger, kNumber, kNumberOrNull, kIntegerOrNull, kBool, kObject, kArray };

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kString: return "a string";
    case Kind::kInteger: return "an integer";
    case Kind::kNumber: return "a number";
    case Kind::kNumberOrNull: return "a number or null";
    case Kind::kIntegerOrNull: return "an integer or null";
    case Kind::kBool: return "true or false";
    case Kind::kObject: return "an object";
    case Kind::kArray: return "an array";
  }
  return "?";
}

bool has_kind(const json& value, Kind kind) {
  switch (kind) {
    case Kind::kString: return value.is_string();
    case Kind::kInteger: return value.is_number_integer();
    case Kind::kNumber: return value.is_number();
    case Kind::kNumberOrNull: return value.is_number() || value.is_null();
    case Kind::kIntegerOrNull: return value.is_number_integer() || value.is_null();
    case Kind::kBool: return value.is_boolean();
    case Kind::kObject: return value.is_object();
    case Kind::kArray: return value.is_array();
  }
  return false;
}

// Checks one metrics.json document; every error names the file and the key path
// ("identities[1].clip_score.ci95").
class SchemaCheck {
 public:
  explicit SchemaCheck(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw std::runtime_error("metrics file '" + file_ + "': " +
                             (key.empty() ? std::string("the document") : "key '" + key + "'") + " " + what);
  }

  const json& require(const json& object, const std::string& path, const std::string& key, Kind kind) const {
    const std::string full = path.empty() ? key : path + "." + key;
    if (!object.contains(key)) fail(full, "is missing");
    const json& value = object.at(key);
    if (!has_kind(value, kind)) fail(full, std::string("must be ") + kind_name(kind) + " (found " + value.type_name() + ")");
    return value;
  }

  void summary(const json& object, const std::string& path, const std::string& key) const {
    const std::string full = path + "." + key;
    const json& s = require(object, path, key, Kind::kObject);
    require(s, full, "n", Kind::kInteger);
    require(s, full, "mean", Kind::kNumberOrNull);
    require(s, full, "std", Kind::kNumberOrNull);
    if (!s.contains("ci95")) fail(full + ".ci95", "is missing");
    const json& ci = s.at("ci95");
    if (ci.is_null()) return;
    if (!ci.is_array() || ci.size() != 2 || !has_kind(ci[0], Kind::kNumberOrNull) ||
        !has_kind(ci[1], Kind::kNumberOrNull))
      fail(full + ".ci95", "must be [low, high] (numbers or null), found " + ci.dump());
  }

  void metric_block(const json& object, const std::string& path) const {
    require(object, path, "n", Kind::kInteger);
    for (const char* key : {"id_similarity", "id_similarity_strict", "clip_cosine", "clip_score"})
      summary(object, path, key);
    require(object, path, "face_failure_rate", Kind::kNumberOrNull);
  }

  void document(const json& doc) const {
    if (!doc.is_object()) fail("", std::string("must be a JSON object (found ") + doc.type_name() + ")");
    const std::string format = require(doc, "", "format", Kind::kString).get<std::string>();
    if (format != kFormat)
      fail("format", "is '" + format + "' but must be '" + kFormat + "' (written by lookahead's evaluation)");
    const int64_t version = require(doc, "", "version", Kind::kInteger).get<int64_t>();
    if (version != kVersion)
      fail("version", "is " + std::to_string(version) + " but this build reads version " + std::to_string(kVersion));
    require(doc, "", "label", Kind::kString);

    const json& settings = require(doc, "", "settings", Kind::kObject);
    require(settings, "settings", "step", Kind::kIntegerOrNull);
    const json& guidance = require(settings, "settings", "guidance", Kind::kObject);
    const std::string mode = require(guidance, "settings.guidance", "mode", Kind::kString).get<std::string>();
    if (mode == "lookahead") {
      for (const char* key : {"scale_nokv", "scale_full", "scale_kv"})
        require(guidance, "settings.guidance", key, Kind::kNumber);
    } else if (mode == "cfg") {
      require(guidance, "settings.guidance", "cfg_scale", Kind::kNumber);
    }

    std::set<int64_t> identity_indices, prompt_indices;
    const json& identities = require(doc, "", "identities", Kind::kArray);
    for (size_t i = 0; i < identities.size(); ++i) {
      const std::string path = "identities[" + std::to_string(i) + "]";
      if (!identities[i].is_object()) fail(path, "must be an object");
      require(identities[i], path, "identity", Kind::kInteger);
      const int64_t index = require(identities[i], path, "identity_index", Kind::kInteger).get<int64_t>();
      if (!identity_indices.insert(index).second)
        fail(path + ".identity_index", "repeats identity_index " + std::to_string(index));
      require(identities[i], path, "reference", Kind::kString);
      metric_block(identities[i], path);
    }
    const json& prompts = require(doc, "", "prompts", Kind::kArray);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::string path = "prompts[" + std::to_string(i) + "]";
      if (!prompts[i].is_object()) fail(path, "must be an object");
      const int64_t index = require(prompts[i], path, "prompt_index", Kind::kInteger).get<int64_t>();
      if (!prompt_indices.insert(index).second)
        fail(path + ".prompt_index", "repeats prompt_index " + std::to_string(index));
      require(prompts[i], path, "prompt", Kind::kString);
      metric_block(prompts[i], path);
    }
    const json& samples = require(doc, "", "samples", Kind::kArray);
    for (size_t i = 0; i < samples.size(); ++i) {
      const std::string path = "samples[" + std::to_string(i) + "]";
      const json& s = samples[i];
      if (!s.is_object()) fail(path, "must be an object");
      require(s, path, "identity", Kind::kInteger);
      const int64_t identity = require(s, path, "identity_index", Kind::kInteger).get<int64_t>();
      if (!identity_indices.count(identity))
        fail(path + ".identity_index", "is " + std::to_string(identity) + " but no identities[] entry has it");
      const int64_t prompt = require(s, path, "prompt_index", Kind::kInteger).get<int64_t>();
      if (!prompt_indices.count(prompt))
        fail(path + ".prompt_index", "is " + std::to_string(prompt) + " but no prompts[] entry has it");
      require(s, path, "prompt", Kind::kString);
      if (require(s, path, "sample", Kind::kInteger).get<int64_t>() < 0) fail(path + ".sample", "must be >= 0");
      require(s, path, "image", Kind::kString);
      const bool face = require(s, path, "face_found", Kind::kBool).get<bool>();
      const json& id = require(s, path, "id_similarity", Kind::kNumberOrNull);
      if (face && id.is_null()) fail(path + ".id_similarity", "is null although face_found is true");
      if (!face && !id.is_null()) fail(path + ".id_similarity", "is a number although face_found is false");
      require(s, path, "clip_cosine", Kind::kNumber);
      require(s, path, "clip_score", Kind::kNumber);
    }
    metric_block(require(doc, "", "overall", Kind::kObject), "overall");
  }

 private:
  std::string file_;
};

// ---- formatting ---------------------------------------------------------------------------------

std::string escape_html(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Percent-encodes a relative path for a src attribute ('/' kept; '#', '?', '%', spaces and
// non-ASCII bytes encoded so that file names survive as written).
std::string escape_url_path(const std::string& path) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : path) {
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || c == '/') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string fixed(double value, int digits) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", digits, value);
  return buffer;
}

// Rounded as displayed, so that bold marks exactly the cells whose printed value is the best.
double rounded(double value, int digits) {
  const double scale = std::pow(10.0, digits);
  return std::round(value * scale) / scale;
}

std::optional<double> number(const json& value) {
  if (value.is_number()) return value.get<double>();
  return std::nullopt;
}

constexpr const char* kDash = "\xE2\x80\x94";      // —
constexpr const char* kPlusMinus = " \xC2\xB1 ";  // ±
constexpr const char* kTimes = "\xC3\x97";         // ×

// A Summary JSON ({"n", "mean", "std", "ci95"}) scaled by `scale`.
struct Stat {
  int64_t n = 0;
  std::optional<double> mean, low, high;
  std::optional<double> half_width() const {
    if (low && high) return (*high - *low) / 2;
    return std::nullopt;
  }
};

Stat stat(const json& summary, double scale = 1) {
  Stat s;
  s.n = summary.at("n").get<int64_t>();
  if (auto m = number(summary.at("mean"))) s.mean = *m * scale;
  const json& ci = summary.at("ci95");
  if (ci.is_array()) {
    if (auto lo = number(ci[0])) s.low = *lo * scale;
    if (auto hi = number(ci[1])) s.high = *hi * scale;
  }
  return s;
}

std::string format_stat(const Stat& s, int digits) {
  if (!s.mean) return kDash;
  std::string text = fixed(*s.mean, digits);
  if (auto half = s.half_width()) text += kPlusMinus + fixed(*half, digits);
  return text;
}

std::string format_rate(const json& rate) {
  if (auto r = number(rate)) return fixed(*r * 100, 1) + " %";
  return kDash;
}

// A short number for settings (3 rather than 3.000000).
std::string short_number(const json& value) {
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_number()) {
    std::ostringstream out;
    out << value.get<double>();
    return out.str();
  }
  if (value.is_string()) return value.get<std::string>();
  return value.dump();
}

std::string guidance_text(const json& guidance) {
  const std::string mode = guidance.at("mode").get<std::string>();
  if (mode == "lookahead")
    return "lookahead " + short_number(guidance.at("scale_nokv")) + " / " + short_number(guidance.at("scale_full")) +
           " / " + short_number(guidance.at("scale_kv"));
  if (mode == "cfg") return "cfg " + short_number(guidance.at("cfg_scale"));
  return mode;
}

std::string setting_text(const json& settings, const char* key) {
  if (!settings.contains(key) || settings.at(key).is_null()) return kDash;
  return short_number(settings.at(key));
}

// ---- the summary table --------------------------------------------------------------------------

struct Column {
  std::string key, header;
  int digits = 3;
  bool higher_is_better = true;
};

// One row's values for the columns that can be best.
struct Row {
  std::map<std::string, Stat> stats;
  std::optional<double> failure_percent;
  int64_t samples = 0;
};

const std::vector<Column>& ranked_columns() {
  static const std::vector<Column> columns = {
      {"id_similarity", "ID similarity", 3, true},
      {"id_similarity_strict", "ID strict (no face = 0)", 3, true},
      {"face_failure_rate", "no face", 1, false},
      {"clip_score", std::string("CLIP score (") + kTimes + "100)", 2, true},
      {"clip_cosine", "CLIP cosine", 4, true},
  };
  return columns;
}

Row make_row(const json& metrics) {
  const json& overall = metrics.at("overall");
  Row row;
  for (const char* key : {"id_similarity", "id_similarity_strict", "clip_score", "clip_cosine"})
    row.stats[key] = stat(overall.at(key));
  if (auto rate = number(overall.at("face_failure_rate"))) row.failure_percent = *rate * 100;
  row.samples = overall.at("n").get<int64_t>();
  return row;
}

std::optional<double> ranked_value(const Row& row, const Column& column) {
  if (column.key == "face_failure_rate") return row.failure_percent;
  return row.stats.at(column.key).mean;
}

// The best displayed value per column; none when fewer than two rows have a value.
std::map<std::string, double> best_values(const std::vector<Row>& rows) {
  std::map<std::string, double> best;
  for (const Column& column : ranked_columns()) {
    std::optional<double> b;
    int count = 0;
    for (const Row& row : rows) {
      auto v = ranked_value(row, column);
      if (!v) continue;
      ++count;
      const double r = rounded(*v, column.digits);
      if (!b || (column.higher_is_better ? r > *b : r < *b)) b = r;
    }
    if (b && count >= 2) best[column.key] = *b;
  }
  return best;
}

bool is_best(const Row& row, const Column& column, const std::map<std::string, double>& best) {
  auto it = best.find(column.key);
  auto v = ranked_value(row, column);
  return it != best.end() && v && rounded(*v, column.digits) == it->second;
}

std::string cell(const std::string& cls, const std::string& text, bool bold) {
  return "<td class=\"num " + cls + (bold ? " best" : "") + "\">" + (bold ? "<b>" + text + "</b>" : text) + "</td>";
}

void write_summary_table(std::ostream& out, const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                         const std::map<std::string, double>& best) {
  out << "<h2>Summary</h2>\n<table id=\"summary\">\n<thead><tr><th>run</th><th>step</th><th>guidance</th>";
  for (const Column& column : ranked_columns())
    out << "<th class=\"" << column.key << "\">" << escape_html(column.header)
        << (column.higher_is_better ? " \xE2\x86\x91" : " \xE2\x86\x93") << "</th>";
  out << "<th>samples</th></tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < entries.size(); ++i) {
    const json& settings = entries[i].metrics.at("settings");
    const Row& row = rows[i];
    out << "<tr class=\"entry\" data-label=\"" << escape_html(entries[i].label) << "\"><th class=\"label\">"
        << escape_html(entries[i].label) << "</th><td class=\"num step\">" << escape_html(setting_text(settings, "step"))
        << "</td><td class=\"guidance\">" << escape_html(guidance_text(settings.at("guidance"))) << "</td>";
    for (const Column& column : ranked_columns()) {
      const bool bold = is_best(row, column, best);
      std::string text;
      if (column.key == "face_failure_rate")
        text = row.failure_percent ? fixed(*row.failure_percent, 1) + " %" : kDash;
      else if (column.key == "clip_cosine")
        text = row.stats.at(column.key).mean ? fixed(*row.stats.at(column.key).mean, column.digits) : kDash;
      else
        text = format_stat(row.stats.at(column.key), column.digits);
      out << cell(column.key, text, bold);
    }
    out << "<td class=\"num samples\">" << row.samples << "</td></tr>\n";
  }
  out << "</tbody>\n</table>\n<p class=\"note\">Mean " << kPlusMinus
      << " half-width of the 95 % confidence interval. ID similarity: cosine of the face embeddings of each "
         "generation and its identity's reference, over generations where a face was detected; strict: "
         "generations without a face count as 0. CLIP score: 100 " << kTimes
      << " max(cosine, 0) of image and prompt embeddings. Best value per column in bold.</p>\n";
}

void write_settings_table(std::ostream& out, const std::vector<ReportEntry>& entries) {
  out << "<h2>Settings</h2>\n<table id=\"settings\">\n<thead><tr><th>run</th><th>checkpoint</th><th>sampler</th>"
         "<th>steps</th><th>encoder prompt</th><th>seed</th><th>resolution</th><th>identities</th>"
         "<th>samples / prompt</th><th>ID model</th><th>face detector</th><th>CLIP model</th></tr></thead>\n<tbody>\n";
  for (const ReportEntry& entry : entries) {
    const json& s = entry.metrics.at("settings");
    out << "<tr data-label=\"" << escape_html(entry.label) << "\"><th>" << escape_html(entry.label) << "</th>";
    for (const char* key : {"checkpoint", "sampler", "steps", "encoder_prompt", "seed", "resolution", "identities",
                            "samples", "id_model", "face_detector", "clip_model"})
      out << "<td>" << escape_html(setting_text(s, key)) << "</td>";
    out << "</tr>\n";
  }
  out << "</tbody>\n</table>\n";
}

// ---- the scatter plot ---------------------------------------------------------------------------

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

// ---- per-entry sections -------------------------------------------------------------------------

void write_prompt_table(std::ostream& out, const ReportEntry& entry) {
  std::vector<json> prompts(entry.metrics.at("prompts").begin(), entry.metrics.at("prompts").end());
  std::sort(prompts.begin(), prompts.end(),
            [](const json& a, const json& b) { return a.at("prompt_index") < b.at("prompt_index"); });
  out << "<table class=\"prompts\" data-label=\"" << escape_html(entry.label)
      << "\">\n<thead><tr><th>#</th><th>prompt</th><th>samples</th><th>ID similarity</th><th>ID strict</th>"
         "<th>no face</th><th>CLIP score</th><th>CLIP cosine</th></tr></thead>\n<tbody>\n";
  for (const json& p : prompts) {
    const Stat cosine = stat(p.at("clip_cosine"));
    out << "<tr data-prompt-index=\"" << p.at("prompt_index").get<int64_t>() << "\"><td class=\"num\">"
        << p.at("prompt_index").get<int64_t>() << "</td><td class=\"prompt\">"
        << escape_html(p.at("prompt").get<std::string>()) << "</td><td class=\"num\">" << p.at("n").get<int64_t>()
        << "</td><td class=\"num\">" << format_stat(stat(p.at("id_similarity")), 3) << "</td><td class=\"num\">"
        << format_stat(stat(p.at("id_similarity_strict")), 3) << "</td><td class=\"num\">"
        << format_rate(p.at("face_failure_rate")) << "</td><td class=\"num\">" << format_stat(stat(p.at("clip_score")), 2)
        << "</td><td class=\"num\">" << (cosine.mean ? fixed(*cosine.mean, 4) : kDash) << "</td></tr>\n";
  }
  out << "</tbody>\n</table>\n";
}

// Resolves an image path of `entry` to a URL relative to the report folder; empty when the file
// does not exist.
struct ImageRef {
  std::string url, path;
  bool exists = false;
};

ImageRef image_ref(const ReportEntry& entry, const fs::path& out_dir, const std::string& relative) {
  fs::path path = fs::path(relative);
  if (path.is_relative()) path = fs::path(entry.folder) / path;
  path = fs::weakly_canonical(fs::absolute(path));
  fs::path rel = path.lexically_relative(out_dir);
  if (rel.empty()) rel = path;
  return {escape_url_path(rel.generic_string()), path.string(), fs::is_regular_file(path)};
}

std::string sample_caption(const json& sample) {
  std::string text = sample.at("face_found").get<bool>() ? "ID " + fixed(sample.at("id_similarity").get<double>(), 3)
                                                         : "no face";
  return text + " \xC2\xB7 CLIP " + fixed(sample.at("clip_score").get<double>(), 1);
}

void write_grid(std::ostream& out, const ReportEntry& entry, const fs::path& out_dir) {
  const json& metrics = entry.metrics;
  std::vector<json> identities(metrics.at("identities").begin(), metrics.at("identities").end());
  std::sort(identities.begin(), identities.end(),
            [](const json& a, const json& b) { return a.at("identity_index") < b.at("identity_index"); });
  std::vector<json> prompts(metrics.at("prompts").begin(), metrics.at("prompts").end());
  std::sort(prompts.begin(), prompts.end(),
            [](const json& a, const json& b) { return a.at("prompt_index") < b.at("prompt_index"); });
  // (identity_index, prompt_index) -> samples by sample number; columns per prompt = most samples.
  std::map<std::pair<int64_t, int64_t>, std::map<int64_t, const json*>> cells;
  std::map<int64_t, int64_t> columns;
  for (const json& s : metrics.at("samples")) {
    const int64_t identity = s.at("identity_index").get<int64_t>(), prompt = s.at("prompt_index").get<int64_t>();
    const int64_t sample = s.at("sample").get<int64_t>();
    cells[{identity, prompt}][sample] = &s;
    columns[prompt] = std::max(columns[prompt], sample + 1);
  }

  const std::string label = escape_html(entry.label);
  out << "<div class=\"grid\" data-label=\"" << label << "\">\n<table>\n<thead><tr><th>reference</th>";
  for (const json& p : prompts) {
    const int64_t index = p.at("prompt_index").get<int64_t>();
    out << "<th class=\"prompt\" colspan=\"" << std::max<int64_t>(columns[index], 1) << "\">"
        << escape_html(p.at("prompt").get<std::string>()) << "</th>";
  }
  out << "</tr></thead>\n<tbody>\n";
  for (const json& identity : identities) {
    const int64_t index = identity.at("identity_index").get<int64_t>();
    const int64_t id_number = identity.at("identity").get<int64_t>();
    const Stat id = stat(identity.at("id_similarity"));
    out << "<tr data-identity=\"" << id_number << "\"><td class=\"reference\"><figure>";
    const std::string reference = identity.at("reference").get<std::string>();
    const ImageRef ref = reference.empty() ? ImageRef{} : image_ref(entry, out_dir, reference);
    if (ref.exists)
      out << "<a href=\"" << escape_html(ref.url) << "\"><img class=\"reference\" src=\"" << escape_html(ref.url)
          << "\" alt=\"reference of identity " << id_number << "\"></a>";
    else
      out << "<div class=\"missing\">" << (reference.empty() ? "not saved" : "missing: " + escape_html(ref.path))
          << "</div>";
    out << "<figcaption>identity " << id_number << "<br>mean ID " << format_stat(id, 3) << "</figcaption></figure></td>";
    for (const json& p : prompts) {
      const int64_t prompt = p.at("prompt_index").get<int64_t>();
      const auto found = cells.find({index, prompt});
      for (int64_t k = 0; k < std::max<int64_t>(columns[prompt], 1); ++k) {
        const json* sample = nullptr;
        if (found != cells.end()) {
          auto it = found->second.find(k);
          if (it != found->second.end()) sample = it->second;
        }
        if (sample == nullptr) {
          out << "<td class=\"empty\"></td>";
          continue;
        }
        const std::string image = sample->at("image").get<std::string>();
        const ImageRef img = image.empty() ? ImageRef{} : image_ref(entry, out_dir, image);
        const bool face = sample->at("face_found").get<bool>();
        out << "<td class=\"" << (face ? "sample" : "sample no-face") << "\"><figure>";
        if (img.exists)
          out << "<a href=\"" << escape_html(img.url) << "\"><img class=\"generation\" src=\"" << escape_html(img.url)
              << "\" alt=\"identity " << id_number << ", prompt " << prompt << ", sample " << k << "\"></a>";
        else
          out << "<div class=\"missing\">" << (image.empty() ? "not saved" : "missing: " + escape_html(img.path))
              << "</div>";
        out << "<figcaption>" << sample_caption(*sample) << "</figcaption></figure></td>";
      }
    }
    out << "</tr>\n";
  }
  out << "</tbody>\n</table>\n</div>\n";
}

constexpr const char* kStyle = R"(body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 24px; } h2 { font-size: 19px; margin-top: 28px; } h3 { font-size: 16px; }
table { border-collapse: collapse; margin: 10px 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }
thead th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.best { background: #fff6d5; }
.note, .not-plotted { font-size: 12px; color: #555; max-width: 900px; }
.grid td, .grid th { padding: 3px; text-align: center; }
.grid th.prompt { max-width: 280px; font-weight: normal; font-style: italic; }
.grid figure { margin: 0; }
.grid img { width: 128px; height: 128px; object-fit: cover; display: block; margin: 0 auto; }
.grid .missing { width: 128px; height: 128px; font-size: 11px; color: #a00; overflow-wrap: anywhere; }
.grid td.no-face figcaption { color: #a00; }
figcaption { font-size: 11px; color: #444; margin-top: 2px; }
)";

void write_file(const fs::path& path, const std::string& content) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) throw std::runtime_error("cannot write '" + path.string() + "'");
  file << content;
  file.close();
  if (!file) throw std::runtime_error("writing '" + path.string() + "' failed");
}

json comparison_json(const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                     const std::map<std::string, double>& best, const std::string& title) {
  json columns = json::array();
  for (const Column& c : ranked_columns())
    columns.push_back({{"key", c.key}, {"header", c.header}, {"better", c.higher_is_better ? "higher" : "lower"}});
  json out_rows = json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    const json& settings = entries[i].metrics.at("settings");
    const json& overall = entries[i].metrics.at("overall");
    json best_keys = json::array();
    for (const Column& c : ranked_columns())
      if (is_best(rows[i], c, best)) best_keys.push_back(c.key);
    out_rows.push_back({{"label", entries[i].label},
                        {"folder", entries[i].folder},
                        {"checkpoint", settings.value("checkpoint", json())},
                        {"step", settings.at("step")},
                        {"guidance", settings.at("guidance")},
                        {"guidance_text", guidance_text(settings.at("guidance"))},
                        {"samples", overall.at("n")},
                        {"id_similarity", overall.at("id_similarity")},
                        {"id_similarity_strict", overall.at("id_similarity_strict")},
                        {"face_failure_rate", overall.at("face_failure_rate")},
                        {"clip_score", overall.at("clip_score")},
                        {"clip_cosine", overall.at("clip_cosine")},
                        {"best", best_keys}});
  }
  return {{"format", "lookahead-eval-comparison"},
          {"version", 1},
          {"title", title},
          {"columns", columns},
          {"rows", out_rows}};
}

}  // namespace

ReportEntry load_report_entry(const std::string& metrics_json_path) {
  std::ifstream file(metrics_json_path, std::ios::binary);
  if (!file) throw std::runtime_error("metrics file '" + metrics_json_path + "': cannot be opened");
  json doc;
  try {
    doc = json::parse(file);
  } catch (const json::parse_error& e) {
    throw std::runtime_error("metrics file '" + metrics_json_path + "': not valid JSON (" + e.what() + ")");
  }
  SchemaCheck(metrics_json_path).document(doc);
  ReportEntry entry;
  entry.label = doc.at("label").get<std::string>();
  entry.folder = fs::path(metrics_json_path).parent_path().string();
  if (entry.folder.empty()) entry.folder = ".";
  entry.metrics = std::move(doc);
  return entry;
}

void write_report(const std::vector<ReportEntry>& entries, const std::string& out_dir, const std::string& title) {
  if (entries.empty()) throw std::invalid_argument("write_report: no entries to report");
  std::set<std::string> labels;
  for (const ReportEntry& entry : entries) {
    const std::string where = "entry '" + entry.label + "' (" + entry.folder + ")";
    SchemaCheck(where).document(entry.metrics);
    if (entry.label.empty()) throw std::invalid_argument("write_report: " + where + " has an empty label");
    if (!labels.insert(entry.label).second)
      throw std::invalid_argument("write_report: two entries are labelled '" + entry.label +
                                  "'; give each run a distinct label");
  }
  fs::create_directories(out_dir);
  const fs::path dir = fs::weakly_canonical(fs::absolute(out_dir));

  std::vector<Row> rows;
  for (const ReportEntry& entry : entries) rows.push_back(make_row(entry.metrics));
  const auto best = best_values(rows);

  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << escape_html(title)
       << "</title>\n<style>\n" << kStyle << "</style>\n</head>\n<body>\n<h1>" << escape_html(title) << "</h1>\n";
  write_summary_table(html, entries, rows, best);
  write_scatter(html, entries, rows);
  write_settings_table(html, entries);
  for (const ReportEntry& entry : entries) {
    const std::string label = escape_html(entry.label);
    html << "<section class=\"entry\" data-label=\"" << label << "\">\n<h2>" << label << "</h2>\n<h3>Per prompt</h3>\n";
    write_prompt_table(html, entry);
    html << "<h3>Per identity</h3>\n";
    write_grid(html, entry, dir);
    html << "</section>\n";
  }
  html << "</body>\n</html>\n";

  write_file(dir / "report.html", html.str());
  write_file(dir / "comparison.json", comparison_json(entries, rows, best, title).dump(2) + "\n");
}

}  // namespace lookahead::trainer
