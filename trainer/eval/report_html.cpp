// The page has no script: it is meant to be archived next to the images.
#include "trainer/eval/report_html.h"

#include <algorithm>
#include <cctype>
#include <sstream>

#include "trainer/eval/report_format.h"
#include "trainer/eval/report_plot.h"

namespace lookahead::trainer::report {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

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

}  // namespace

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

std::string render_report_html(const std::vector<ReportEntry>& entries, const std::vector<Row>& rows,
                               const std::map<std::string, double>& best, const fs::path& out_dir,
                               const std::string& title) {
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
    write_grid(html, entry, out_dir);
    html << "</section>\n";
  }
  html << "</body>\n</html>\n";
  return html.str();
}

}  // namespace lookahead::trainer::report
