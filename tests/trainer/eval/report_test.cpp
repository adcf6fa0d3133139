// The evaluation report on synthetic runs: summary rows with the formatted values and the best
// per column in bold, escaped prompts and labels, the image grids (relative paths, captions,
// counts), the scatter plot's point positions, comparison.json, and clear errors for bad
// metrics.json files.
#include "tests/trainer/eval/report_fixture.h"
#include "trainer/eval/eval_report.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include <unistd.h>

namespace lookahead::trainer {
namespace {

namespace fs = std::filesystem;
namespace rf = lookahead::test::report;
using nlohmann::json;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("lookahead_report_test_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string read(const fs::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream s;
  s << file.rdbuf();
  return s.str();
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// The text from the first `open` to the next `close` (inclusive).
std::string between(const std::string& text, const std::string& open, const std::string& close) {
  const size_t begin = text.find(open);
  EXPECT_NE(begin, std::string::npos) << open;
  if (begin == std::string::npos) return "";
  const size_t end = text.find(close, begin);
  EXPECT_NE(end, std::string::npos) << close;
  return text.substr(begin, end == std::string::npos ? std::string::npos : end + close.size() - begin);
}

double attribute(const std::string& element, const std::string& name) {
  std::smatch m;
  const std::regex re(" " + name + "=\"([^\"]*)\"");
  EXPECT_TRUE(std::regex_search(element, m, re)) << name << " in " << element;
  return m.empty() ? NAN : std::stod(m[1].str());
}

// Plot geometry from the svg element and one circle per data-label.
struct Plot {
  double x_min, x_max, y_min, y_max, left, right, top, bottom;
  std::map<std::string, std::string> circles;
  double px(double v) const { return left + (v - x_min) / (x_max - x_min) * (right - left); }
  double py(double v) const { return bottom - (v - y_min) / (y_max - y_min) * (bottom - top); }
};

Plot parse_plot(const std::string& html) {
  const std::string svg = between(html, "<svg id=\"id-vs-clip\"", "</svg>");
  const std::string head = svg.substr(0, svg.find('>'));
  Plot plot{attribute(head, "data-x-min"), attribute(head, "data-x-max"), attribute(head, "data-y-min"),
            attribute(head, "data-y-max"), attribute(head, "data-left"),  attribute(head, "data-right"),
            attribute(head, "data-top"),   attribute(head, "data-bottom"), {}};
  const std::regex circle("<circle class=\"point\" data-label=\"([^\"]*)\"[^>]*>");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), circle); it != std::sregex_iterator(); ++it)
    plot.circles[(*it)[1].str()] = (*it)[0].str();
  return plot;
}

std::vector<ReportEntry> write_two_runs(const fs::path& dir) {
  std::vector<ReportEntry> entries;
  const auto runs = rf::two_runs();
  for (size_t i = 0; i < runs.size(); ++i)
    entries.push_back(load_report_entry(rf::write_run(dir / ("run-" + std::to_string(i)), runs[i])));
  return entries;
}

TEST(EvalReport, SummaryTableHasFormattedValuesAndBestInBold) {
  const fs::path dir = fresh_dir("summary");
  const auto entries = write_two_runs(dir);
  EXPECT_EQ(entries[0].label, "step-40");
  EXPECT_EQ(entries[1].label, "cfg <baseline>");
  write_report(entries, (dir / "report").string(), "Step 40 vs <CFG>");
  const std::string html = read(dir / "report" / "report.html");

  EXPECT_NE(html.find("<h1>Step 40 vs &lt;CFG&gt;</h1>"), std::string::npos);
  const std::string table = between(html, "<table id=\"summary\">", "</table>");
  EXPECT_EQ(count(table, "<tr class=\"entry\""), 2u);
  const std::string row_a = between(table, "<tr class=\"entry\" data-label=\"step-40\">", "</tr>");
  const std::string row_b = between(table, "<tr class=\"entry\" data-label=\"cfg &lt;baseline&gt;\">", "</tr>");
  // step-40: best ID, strict ID and face rate; the baseline: best CLIP score and cosine.
  EXPECT_NE(row_a.find("<td class=\"num step\">40</td>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find("<td class=\"guidance\">lookahead 3 / 2 / 2</td>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find("<b>0.412 \u00b1 0.030</b>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find("<b>0.371 \u00b1 0.041</b>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find("<b>12.5 %</b>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find(">24.37 \u00b1 0.52</td>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find(">0.2437</td>"), std::string::npos) << row_a;
  EXPECT_NE(row_a.find("<td class=\"num samples\">8</td>"), std::string::npos) << row_a;
  EXPECT_EQ(count(row_a, "<b>"), 3u) << row_a;
  EXPECT_NE(row_b.find("<td class=\"guidance\">cfg 5</td>"), std::string::npos) << row_b;
  EXPECT_NE(row_b.find(">0.268 \u00b1 0.021</td>"), std::string::npos) << row_b;
  EXPECT_NE(row_b.find(">25.0 %</td>"), std::string::npos) << row_b;
  EXPECT_NE(row_b.find("<b>26.82 \u00b1 0.61</b>"), std::string::npos) << row_b;
  EXPECT_NE(row_b.find("<b>0.2682</b>"), std::string::npos) << row_b;
  EXPECT_EQ(count(row_b, "<b>"), 2u) << row_b;

  // comparison.json carries the same table.
  const json comparison = json::parse(read(dir / "report" / "comparison.json"));
  EXPECT_EQ(comparison.at("format"), "lookahead-eval-comparison");
  ASSERT_EQ(comparison.at("rows").size(), 2u);
  EXPECT_EQ(comparison["rows"][0]["label"], "step-40");
  EXPECT_DOUBLE_EQ(comparison["rows"][0]["id_similarity"]["mean"].get<double>(), 0.412);
  EXPECT_EQ(comparison["rows"][0]["best"],
            json::array({"id_similarity", "id_similarity_strict", "face_failure_rate"}));
  EXPECT_EQ(comparison["rows"][1]["best"], json::array({"clip_score", "clip_cosine"}));
  EXPECT_EQ(comparison["rows"][1]["guidance_text"], "cfg 5");
  EXPECT_EQ(comparison["rows"][1]["samples"], 8);
}

TEST(EvalReport, PromptsAndLabelsAreEscaped) {
  const fs::path dir = fresh_dir("escape");
  write_report(write_two_runs(dir), (dir / "report").string(), "escape");
  const std::string html = read(dir / "report" / "report.html");
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<baseline>"), std::string::npos);
  const std::string escaped0 = "a photo of &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; friends";
  const std::string escaped1 = "a person&#39;s portrait in a caf\xC3\xA9, &#39;oil&#39; painting";
  // Once per grid header and once per per-prompt table, for each of the two runs.
  EXPECT_EQ(count(html, escaped0), 4u);
  EXPECT_EQ(count(html, escaped1), 4u);
  EXPECT_EQ(count(html, "<th class=\"prompt\" colspan=\"2\">" + escaped0 + "</th>"), 2u);
  EXPECT_NE(html.find("<div class=\"grid\" data-label=\"cfg &lt;baseline&gt;\">"), std::string::npos);
}

TEST(EvalReport, GridsHaveEveryImageWithCaptions) {
  const fs::path dir = fresh_dir("grid");
  write_report(write_two_runs(dir), (dir / "report").string(), "grid");
  const std::string html = read(dir / "report" / "report.html");
  const std::string grid_a = between(html, "<div class=\"grid\" data-label=\"step-40\">", "</div>");
  const std::string grid_b = between(html, "<div class=\"grid\" data-label=\"cfg &lt;baseline&gt;\">", "</table>");
  EXPECT_EQ(count(grid_a, "<img class=\"generation\""), 8u);
  EXPECT_EQ(count(grid_a, "<img class=\"reference\""), 2u);
  // The baseline's sample (identity 1, prompt 1, sample 1) was not saved: its cell says "not saved".
  EXPECT_EQ(count(grid_b, "<img class=\"generation\""), 7u);
  EXPECT_EQ(count(grid_b, "<div class=\"missing\">not saved</div>"), 1u);
  EXPECT_EQ(count(html, "<img class=\"generation\""), 15u);
  EXPECT_EQ(count(grid_a, "<tr data-identity="), 2u);
  EXPECT_NE(grid_a.find("<tr data-identity=\"7\">"), std::string::npos);

  // Paths relative to the report folder, and every referenced file exists there.
  EXPECT_NE(grid_a.find("src=\"../run-0/images/id0003/reference.png\""), std::string::npos);
  EXPECT_NE(grid_a.find("src=\"../run-0/images/id0007/p01_s00.png\""), std::string::npos);
  EXPECT_EQ(count(grid_a, "<a href=\"../run-0/images/id0003/p00_s00.png\"><img class=\"generation\" "
                          "src=\"../run-0/images/id0003/p00_s00.png\""),
            1u);
  const std::regex src("src=\"([^\"]+)\"");
  int sources = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), src); it != std::sregex_iterator(); ++it, ++sources)
    EXPECT_TRUE(fs::is_regular_file(dir / "report" / (*it)[1].str())) << (*it)[1].str();
  EXPECT_EQ(sources, 19);

  // Captions: ID similarity (or "no face") and CLIP score of each sample, in grid order.
  const std::string caption = "<figcaption>ID " + std::to_string(rf::sample_id(1, 0, 1)).substr(0, 5) +
                              " \u00b7 CLIP 20.5</figcaption>";
  EXPECT_EQ(caption, "<figcaption>ID 0.401 \u00b7 CLIP 20.5</figcaption>");
  EXPECT_EQ(count(grid_a, caption), 1u);
  EXPECT_EQ(count(grid_a, "<figcaption>no face \u00b7 CLIP 21.5</figcaption>"), 1u);
  EXPECT_EQ(count(grid_a, "<td class=\"sample no-face\">"), 1u);
  // Row identity 3: reference, then prompt 0 samples 0/1, prompt 1 samples 0/1.
  const std::string row = between(grid_a, "<tr data-identity=\"3\">", "</tr>");
  const std::vector<std::string> expected = {"ID 0.300", "ID 0.301", "ID 0.310", "no face"};
  size_t at = 0;
  for (const auto& e : expected) {
    at = row.find("<figcaption>" + e, at);
    EXPECT_NE(at, std::string::npos) << e;
  }
  // Per-prompt tables: one per run, one row per prompt.
  const std::string prompts = between(html, "<table class=\"prompts\" data-label=\"step-40\">", "</table>");
  EXPECT_EQ(count(prompts, "<tr data-prompt-index="), 2u);
  EXPECT_NE(prompts.find(">0.412 \u00b1 0.030</td>"), std::string::npos);
}

TEST(EvalReport, ScatterPointsSitAtTheirValues) {
  const fs::path dir = fresh_dir("scatter");
  const auto runs = rf::two_runs();
  write_report(write_two_runs(dir), (dir / "report").string(), "scatter");
  const Plot plot = parse_plot(read(dir / "report" / "report.html"));
  ASSERT_EQ(plot.circles.size(), 2u);
  const std::vector<std::string> labels = {"step-40", "cfg &lt;baseline&gt;"};
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(plot.circles.count(labels[i])) << labels[i];
    const std::string& c = plot.circles.at(labels[i]);
    EXPECT_NEAR(attribute(c, "cx"), plot.px(runs[i].clip), 0.006) << c;
    EXPECT_NEAR(attribute(c, "cy"), plot.py(runs[i].id), 0.006) << c;
    // The axes hold the whole confidence intervals.
    EXPECT_LE(plot.x_min, runs[i].clip - runs[i].clip_half);
    EXPECT_GE(plot.x_max, runs[i].clip + runs[i].clip_half);
    EXPECT_LE(plot.y_min, runs[i].id - runs[i].id_half);
    EXPECT_GE(plot.y_max, runs[i].id + runs[i].id_half);
  }
  // Higher ID is higher on the page; higher CLIP further right.
  EXPECT_LT(attribute(plot.circles.at(labels[0]), "cy"), attribute(plot.circles.at(labels[1]), "cy"));
  EXPECT_LT(attribute(plot.circles.at(labels[0]), "cx"), attribute(plot.circles.at(labels[1]), "cx"));
  const std::string html = read(dir / "report" / "report.html");
  EXPECT_EQ(count(html, "class=\"error-x\""), 2u);
  EXPECT_EQ(count(html, "class=\"error-y\""), 2u);
  EXPECT_GE(count(html, "class=\"tick-x\""), 3u);
  EXPECT_GE(count(html, "class=\"tick-y\""), 3u);
  // Error bar of step-40's ID: from the CI's low to high end.
  const std::string bar = between(html, "<line class=\"error-y\" data-label=\"step-40\"", "/>");
  EXPECT_NEAR(attribute(bar, "y1"), plot.py(runs[0].id - runs[0].id_half), 0.006);
  EXPECT_NEAR(attribute(bar, "y2"), plot.py(runs[0].id + runs[0].id_half), 0.006);
}

TEST(EvalReport, ScatterWorksWithOneAndWithManyEntries) {
  const fs::path dir = fresh_dir("counts");
  rf::RunValues one = rf::two_runs()[0];
  one.id_half = 0, one.clip_half = 0;  // a zero-width CI must not collapse the axes
  write_report({load_report_entry(rf::write_run(dir / "one", one))}, (dir / "report-one").string(), "one");
  const std::string html_one = read(dir / "report-one" / "report.html");
  const Plot single = parse_plot(html_one);
  ASSERT_EQ(single.circles.size(), 1u);
  EXPECT_GT(single.x_max - single.x_min, 1.0);
  EXPECT_GT(single.y_max - single.y_min, 0.05);
  EXPECT_NEAR(attribute(single.circles.begin()->second, "cx"), single.px(one.clip), 0.006);
  // A single entry has no "best".
  EXPECT_EQ(count(between(html_one, "<table id=\"summary\">", "</table>"), "<b>"), 0u);

  std::vector<ReportEntry> many;
  for (int i = 0; i < 12; ++i) {
    rf::RunValues v = rf::two_runs()[0];
    v.label = "step-" + std::to_string(10 * (i + 1));
    v.step = 10 * (i + 1);
    v.id = 0.2 + 0.02 * i;
    v.clip = 28.0 - 0.3 * i;
    many.push_back(load_report_entry(rf::write_run(dir / v.label, v)));
  }
  write_report(many, (dir / "report-many").string(), "many");
  const std::string html = read(dir / "report-many" / "report.html");
  const Plot plot = parse_plot(html);
  ASSERT_EQ(plot.circles.size(), 12u);
  for (const auto& [label, c] : plot.circles) {
    EXPECT_GE(attribute(c, "cx"), plot.left) << label;
    EXPECT_LE(attribute(c, "cx"), plot.right) << label;
    EXPECT_GE(attribute(c, "cy"), plot.top) << label;
    EXPECT_LE(attribute(c, "cy"), plot.bottom) << label;
  }
  EXPECT_EQ(count(between(html, "<table id=\"summary\">", "</table>"), "<tr class=\"entry\""), 12u);
  EXPECT_EQ(count(html, "<div class=\"grid\""), 12u);
  EXPECT_EQ(count(html, "<img class=\"generation\""), 12u * 8u);
  // Only the last run has the best ID and only the first the best CLIP score.
  EXPECT_NE(html.find("<b>0.420 \u00b1 0.030</b>"), std::string::npos);
  EXPECT_NE(html.find("<b>28.00 \u00b1 0.52</b>"), std::string::npos);
}

TEST(EvalReport, RunWithoutFacesIsListedButNotPlotted) {
  const fs::path dir = fresh_dir("no_faces");
  const auto runs = rf::two_runs();
  ReportEntry faceless = load_report_entry(rf::write_run(dir / "faceless", runs[1]));
  faceless.metrics["overall"]["id_similarity"] = rf::summary(0, 0, 0);
  faceless.metrics["overall"]["face_failure_rate"] = 1.0;
  const ReportEntry normal = load_report_entry(rf::write_run(dir / "normal", runs[0]));
  write_report({normal, faceless}, (dir / "report").string(), "no faces");
  const std::string html = read(dir / "report" / "report.html");
  const Plot plot = parse_plot(html);
  EXPECT_EQ(plot.circles.size(), 1u);
  EXPECT_TRUE(plot.circles.count("step-40"));
  EXPECT_NE(html.find("<p class=\"not-plotted\">Not plotted (no generation with a detected face): cfg &lt;baseline&gt;"),
            std::string::npos);
  const std::string row = between(html, "<tr class=\"entry\" data-label=\"cfg &lt;baseline&gt;\">", "</tr>");
  EXPECT_NE(row.find("<td class=\"num id_similarity\">\u2014</td>"), std::string::npos) << row;
  EXPECT_NE(row.find("<td class=\"num face_failure_rate\">100.0 %</td>"), std::string::npos) << row;
  // With one defined value, the ID column has no best; the face rate column still has one.
  const std::string other = between(html, "<tr class=\"entry\" data-label=\"step-40\">", "</tr>");
  EXPECT_NE(other.find("<td class=\"num id_similarity\">0.412 \u00b1 0.030</td>"), std::string::npos) << other;
  EXPECT_NE(other.find("<b>12.5 %</b>"), std::string::npos) << other;
}

// Loads `doc` written to a file and returns the error message ("" when it loads).
std::string load_error(const fs::path& path, const json& doc) {
  std::ofstream(path) << doc.dump();
  try {
    load_report_entry(path.string());
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(EvalReport, BadMetricsFilesGiveClearErrors) {
  const fs::path dir = fresh_dir("errors");
  const std::string good_path = rf::write_run(dir / "good", rf::two_runs()[0]);
  const json good = json::parse(read(good_path));
  const fs::path bad = dir / "bad.json";
  const std::string file = "metrics file '" + bad.string() + "': ";
  EXPECT_EQ(load_error(bad, good), "");

  json doc = good;
  doc["format"] = "lookahead-train";
  EXPECT_EQ(load_error(bad, doc), file + "key 'format' is 'lookahead-train' but must be 'lookahead-eval' "
                                         "(written by lookahead's evaluation)");
  doc = good;
  doc["version"] = 2;
  EXPECT_EQ(load_error(bad, doc), file + "key 'version' is 2 but this build reads version 1");
  doc = good;
  doc["samples"][5].erase("clip_score");
  EXPECT_EQ(load_error(bad, doc), file + "key 'samples[5].clip_score' is missing");
  doc = good;
  doc["overall"]["clip_score"].erase("ci95");
  EXPECT_EQ(load_error(bad, doc), file + "key 'overall.clip_score.ci95' is missing");
  doc = good;
  doc["identities"][1]["id_similarity"]["mean"] = "high";
  EXPECT_EQ(load_error(bad, doc),
            file + "key 'identities[1].id_similarity.mean' must be a number or null (found string)");
  doc = good;
  doc["settings"].erase("guidance");
  EXPECT_EQ(load_error(bad, doc), file + "key 'settings.guidance' is missing");
  doc = good;
  doc["settings"]["guidance"].erase("scale_kv");
  EXPECT_EQ(load_error(bad, doc), file + "key 'settings.guidance.scale_kv' is missing");
  doc = good;
  doc["samples"][0]["prompt_index"] = 9;
  EXPECT_EQ(load_error(bad, doc), file + "key 'samples[0].prompt_index' is 9 but no prompts[] entry has it");
  doc = good;
  doc["samples"][0]["id_similarity"] = nullptr;
  EXPECT_EQ(load_error(bad, doc), file + "key 'samples[0].id_similarity' is null although face_found is true");
  doc = good;
  doc["prompts"][0]["clip_score"]["ci95"] = json::array({1.0});
  EXPECT_EQ(load_error(bad, doc),
            file + "key 'prompts[0].clip_score.ci95' must be [low, high] (numbers or null), found [1.0]");
  EXPECT_EQ(load_error(bad, json::array()), file + "the document must be a JSON object (found array)");

  std::ofstream(bad) << "{\"format\": ";
  try {
    load_report_entry(bad.string());
    ADD_FAILURE() << "truncated JSON loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(file + "not valid JSON", 0), 0u) << e.what();
  }
  try {
    load_report_entry((dir / "absent.json").string());
    ADD_FAILURE() << "absent file loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "metrics file '" + (dir / "absent.json").string() + "': cannot be opened");
  }

  // write_report: distinct labels, at least one entry.
  const ReportEntry entry = load_report_entry(good_path);
  EXPECT_THROW(write_report({entry, entry}, (dir / "dup").string(), "dup"), std::invalid_argument);
  EXPECT_THROW(write_report({}, (dir / "none").string(), "none"), std::invalid_argument);
  ReportEntry broken = entry;
  broken.label = "broken";
  broken.metrics["overall"].erase("n");
  try {
    write_report({broken}, (dir / "broken").string(), "broken");
    ADD_FAILURE() << "broken entry written";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("key 'overall.n' is missing"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("broken"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lookahead::trainer
