#include "trainer/generate/generate_report.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "common/atomic_file.h"
#include "data/image_io.h"
#include "trainer/eval/report_format.h"
#include "trainer/eval/report_html.h"

namespace lookahead::trainer::generate {
namespace {

using report::escape_html;
using report::fixed;

constexpr const char* kStyle = R"(body { font-family: sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: 90%; }
section.identity { margin: 18px 0; }
section.identity.dropped h3 { color: #b00; }
.description { font-style: italic; }
.tiles { display: flex; flex-wrap: wrap; gap: 6px; }
figure.tile { margin: 0; border: 4px solid; width: 136px; font-size: 11px; }
figure.tile.kept { border-color: #2ca02c; }
figure.tile.rejected { border-color: #d62728; }
figure.tile img, figure.tile .missing { width: 128px; height: 128px; display: block; background: #eee; }
figure.tile figcaption { padding: 2px 4px; }
svg text { font-size: 11px; }
)";

std::string base64(const std::vector<uint8_t>& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (size_t i = 0; i < bytes.size(); i += 3) {
    const uint32_t b0 = bytes[i], b1 = i + 1 < bytes.size() ? bytes[i + 1] : 0,
                   b2 = i + 2 < bytes.size() ? bytes[i + 2] : 0;
    const uint32_t v = b0 << 16 | b1 << 8 | b2;
    out += alphabet[v >> 18 & 63];
    out += alphabet[v >> 12 & 63];
    out += i + 1 < bytes.size() ? alphabet[v >> 6 & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[v & 63] : '=';
  }
  return out;
}

// A data: URI for the tile, or "" when the image has neither bytes nor pixels.
std::string image_uri(const ReportImage& image, int64_t thumbnail_size) {
  std::vector<uint8_t> bytes = image.encoded;
  if (bytes.empty() && image.pixels.defined()) {
    TORCH_CHECK(image.pixels.dim() == 3 && image.pixels.size(2) == 3 && image.pixels.scalar_type() == at::kByte,
                "generate report: image pixels must be uint8 [H, W, 3], got ", image.pixels.scalar_type(), " ",
                image.pixels.sizes());
    const at::Tensor scaled = data::resize_center_crop(image.pixels.cpu(), thumbnail_size);  // [3, s, s] in [-1, 1]
    const at::Tensor thumb =
        ((scaled + 1) * 127.5).round().clamp(0, 255).to(at::kByte).permute({1, 2, 0}).contiguous();  // [s, s, 3]
    bytes = data::encode_jpeg(thumb, 85);
  }
  if (bytes.empty()) return "";
  const data::ImageCodec codec = data::sniff_codec(bytes.data(), bytes.size());
  TORCH_CHECK(codec != data::ImageCodec::kUnknown, "generate report: a thumbnail is neither JPEG nor PNG");
  return std::string("data:image/") + (codec == data::ImageCodec::kPng ? "png" : "jpeg") + ";base64," + base64(bytes);
}

std::string score_text(float score) { return std::isnan(score) ? std::string(report::kDash) : fixed(score, 3); }

void write_statistics(std::ostream& out, const GenerateReport& r) {
  int64_t images = 0;
  for (const auto& [decision, count] : r.images_per_decision) images += count;
  out << "<h2>Filter statistics</h2>\n<table id=\"statistics\">\n<thead><tr><th>images</th><th>count</th>"
         "<th>share</th></tr></thead>\n<tbody>\n";
  for (Decision d : {Decision::kKept, Decision::kNoFace, Decision::kBelowThreshold, Decision::kIdentityDropped}) {
    const auto it = r.images_per_decision.find(d);
    const int64_t count = it == r.images_per_decision.end() ? 0 : it->second;
    out << "<tr data-decision=\"" << to_string(d) << "\"><th>" << to_string(d) << "</th><td class=\"num\">" << count
        << "</td><td class=\"num\">"
        << (images > 0 ? fixed(100.0 * static_cast<double>(count) / static_cast<double>(images), 1) + " %"
                       : std::string(report::kDash))
        << "</td></tr>\n";
  }
  out << "<tr><th>all images</th><td class=\"num\">" << images << "</td><td></td></tr>\n</tbody>\n</table>\n"
      << "<table id=\"identities\">\n<tbody>\n<tr><th>identities kept</th><td class=\"num\">" << r.identities_kept
      << "</td></tr>\n<tr><th>identities dropped</th><td class=\"num\">" << r.identities_dropped
      << "</td></tr>\n<tr><th>duplicate pairs flagged</th><td class=\"num\">" << r.duplicates.size()
      << "</td></tr>\n</tbody>\n</table>\n";
}

// Both histograms as fractions of their pairs (the kinds differ by orders of magnitude in count),
// drawn as step lines over [lo, hi], with the keep threshold.
void write_histograms(std::ostream& out, const GenerateReport& r) {
  constexpr double kWidth = 640, kHeight = 260, kLeft = 50, kRight = 20, kTop = 20, kBottom = 40;
  const double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  struct Kind {
    const char* name;
    const char* color;
    const Histogram* h;
    int64_t total = 0;
  };
  Kind kinds[] = {{"genuine", "#2ca02c", &r.genuine}, {"impostor", "#d62728", &r.impostor}};
  double lo = -1, hi = 1, top = 0;
  for (Kind& k : kinds) {
    for (int64_t c : k.h->counts) k.total += c;
    if (!k.h->counts.empty()) lo = k.h->lo, hi = k.h->hi;
  }
  for (Kind& k : kinds)
    for (int64_t c : k.h->counts)
      if (k.total > 0) top = std::max(top, static_cast<double>(c) / static_cast<double>(k.total));
  if (top <= 0) top = 1;
  const auto x_of = [&](double v) { return kLeft + (v - lo) / (hi - lo) * plot_w; };
  const auto y_of = [&](double f) { return kTop + plot_h - f / top * plot_h; };

  out << "<h2>Similarity histograms</h2>\n<svg id=\"histograms\" xmlns=\"http://www.w3.org/2000/svg\" width=\""
      << kWidth << "\" height=\"" << kHeight << "\" viewBox=\"0 0 " << kWidth << " " << kHeight << "\">\n"
      << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"#888\"/>\n";
  for (int t = 0; t <= 4; ++t) {
    const double v = lo + (hi - lo) * t / 4;
    out << "<text x=\"" << fixed(x_of(v), 1) << "\" y=\"" << kHeight - kBottom + 15 << "\" text-anchor=\"middle\">"
        << fixed(v, 1) << "</text>\n";
  }
  for (int t = 0; t <= 2; ++t) {
    const double f = top * t / 2;
    out << "<text x=\"" << kLeft - 4 << "\" y=\"" << fixed(y_of(f) + 4, 1) << "\" text-anchor=\"end\">"
        << fixed(100 * f, 1) << "%</text>\n";
  }
  out << "<text x=\"" << kLeft + plot_w / 2 << "\" y=\"" << kHeight - 6
      << "\" text-anchor=\"middle\">cosine similarity of ArcFace embeddings (share of pairs per bin)</text>\n";
  for (const Kind& k : kinds) {
    const auto bins = static_cast<double>(k.h->counts.size());
    if (k.total == 0 || bins == 0) continue;
    std::ostringstream d;
    d << "M" << fixed(x_of(lo), 1) << "," << fixed(y_of(0), 1);
    for (size_t b = 0; b < k.h->counts.size(); ++b) {
      const double y = y_of(static_cast<double>(k.h->counts[b]) / static_cast<double>(k.total));
      d << " L" << fixed(x_of(lo + (hi - lo) * static_cast<double>(b) / bins), 1) << "," << fixed(y, 1) << " L"
        << fixed(x_of(lo + (hi - lo) * static_cast<double>(b + 1) / bins), 1) << "," << fixed(y, 1);
    }
    d << " L" << fixed(x_of(hi), 1) << "," << fixed(y_of(0), 1);
    out << "<path class=\"" << k.name << "\" data-pairs=\"" << k.total << "\" d=\"" << d.str()
        << "\" fill=\"none\" stroke=\"" << k.color << "\" stroke-width=\"1.5\"/>\n";
  }
  const double tx = x_of(std::clamp(r.keep_threshold, lo, hi));
  out << "<line class=\"threshold\" x1=\"" << fixed(tx, 1) << "\" y1=\"" << kTop << "\" x2=\"" << fixed(tx, 1)
      << "\" y2=\"" << kTop + plot_h << "\" stroke=\"#000\" stroke-dasharray=\"4 3\"/>\n"
      << "<text x=\"" << fixed(tx + 4, 1) << "\" y=\"" << kTop + 12 << "\">keep "
      << "\xE2\x89\xA5 " << fixed(r.keep_threshold, 2) << "</text>\n";
  double legend_y = kTop + 14;
  for (const Kind& k : kinds) {
    out << "<text x=\"" << kLeft + 8 << "\" y=\"" << legend_y << "\" fill=\"" << k.color << "\">" << k.name << " ("
        << k.total << " pairs)</text>\n";
    legend_y += 14;
  }
  out << "</svg>\n<p class=\"note\">Genuine: two images of the same identity; impostor: images of different "
         "identities. A threshold for another face model is read off where the curves separate.</p>\n";
}

void write_duplicates(std::ostream& out, const GenerateReport& r) {
  out << "<h2>Duplicate identities</h2>\n";
  if (r.duplicates.empty()) {
    out << "<p class=\"note\" id=\"duplicates\">No pair of identities was flagged.</p>\n";
    return;
  }
  out << "<table id=\"duplicates\">\n<thead><tr><th>identity</th><th>identity</th><th>centroid cosine</th></tr>"
         "</thead>\n<tbody>\n";
  for (const ReportDuplicate& d : r.duplicates)
    out << "<tr><td class=\"num\">" << d.a << "</td><td class=\"num\">" << d.b << "</td><td class=\"num\">"
        << fixed(d.cosine, 3) << "</td></tr>\n";
  out << "</tbody>\n</table>\n";
}

void write_settings(std::ostream& out, const nlohmann::json& settings) {
  out << "<h2>Settings</h2>\n<table id=\"settings\">\n<tbody>\n";
  if (settings.is_object()) {
    for (const auto& [key, value] : settings.items())
      out << "<tr><th>" << escape_html(key) << "</th><td>"
          << escape_html(value.is_string() ? value.get<std::string>() : value.dump()) << "</td></tr>\n";
  } else {
    out << "<tr><td>" << escape_html(settings.dump()) << "</td></tr>\n";
  }
  out << "</tbody>\n</table>\n";
}

void write_identity(std::ostream& out, const ReportIdentity& identity, int64_t thumbnail_size) {
  int64_t vanilla = 0, kept_vanilla = 0;
  for (const ReportImage& image : identity.images)
    if (image.vanilla) {
      ++vanilla;
      kept_vanilla += image.decision == Decision::kKept;
    }
  out << "<section class=\"identity " << (identity.kept ? "kept" : "dropped") << "\" data-identity=\"" << identity.id
      << "\">\n<h3>Identity " << identity.id << " \xE2\x80\x94 " << (identity.kept ? "kept" : "dropped") << " ("
      << kept_vanilla << " of " << vanilla << " vanilla images kept)</h3>\n<p class=\"description\">"
      << escape_html(identity.description) << "</p>\n<div class=\"tiles\">\n";
  for (const ReportImage& image : identity.images) {
    const bool kept = image.decision == Decision::kKept;
    const std::string uri = image_uri(image, thumbnail_size);
    out << "<figure class=\"tile " << (kept ? "kept" : "rejected") << "\" data-decision=\"" << to_string(image.decision)
        << "\" data-vanilla=\"" << (image.vanilla ? 1 : 0) << "\" title=\"" << escape_html(image.prompt) << " (seed "
        << image.seed << ")\">";
    if (uri.empty())
      out << "<div class=\"missing\"></div>";
    else
      out << "<img alt=\"" << (image.vanilla ? "vanilla" : "stylized") << "\" src=\"" << uri << "\">";
    out << "<figcaption>" << (image.vanilla ? "vanilla" : "stylized") << " \xC2\xB7 " << to_string(image.decision)
        << " \xC2\xB7 " << score_text(image.score) << "</figcaption></figure>\n";
  }
  out << "</div>\n</section>\n";
}

}  // namespace

std::string render_generate_report(const GenerateReport& report, int64_t max_identities, int64_t thumbnail_size) {
  TORCH_CHECK(max_identities >= 0, "generate report: max_identities must be >= 0, got ", max_identities);
  TORCH_CHECK(thumbnail_size >= 8, "generate report: thumbnail_size must be >= 8, got ", thumbnail_size);
  std::ostringstream html;
  html << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" << escape_html(report.title)
       << "</title>\n<style>\n"
       << kStyle << "</style>\n</head>\n<body>\n<h1>" << escape_html(report.title) << "</h1>\n";
  if (!report.note.empty()) html << "<p class=\"note\" id=\"run-note\">" << escape_html(report.note) << "</p>\n";
  write_statistics(html, report);
  write_histograms(html, report);
  write_duplicates(html, report);
  write_settings(html, report.settings);

  const auto listed = static_cast<int64_t>(report.identities.size());
  const int64_t shown = std::min(listed, max_identities);
  const int64_t total = std::max(listed, report.identities_kept + report.identities_dropped);
  html << "<h2>Identities</h2>\n<p class=\"note\">Tiles: green border kept, red border rejected; caption: kind "
          "\xC2\xB7 decision \xC2\xB7 cosine to the identity's medoid.</p>\n";
  for (int64_t i = 0; i < shown; ++i) write_identity(html, report.identities[static_cast<size_t>(i)], thumbnail_size);
  if (total > shown)
    html << "<p class=\"note\" id=\"omitted\">" << total - shown << " of " << total
         << " identities omitted (the page shows the first " << shown << ").</p>\n";
  html << "</body>\n</html>\n";
  return html.str();
}

void write_generate_report(const GenerateReport& report, const std::filesystem::path& path, int64_t max_identities,
                           int64_t thumbnail_size) {
  common::write_file_atomically(path, render_generate_report(report, max_identities, thumbnail_size));
}

}  // namespace lookahead::trainer::generate
