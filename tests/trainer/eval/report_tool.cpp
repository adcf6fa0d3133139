// Helper of report_chromium.sh: writes the two synthetic runs and their report, then checks what
// headless Chromium made of it (the rendered DOM and a screenshot). Exit status 0 = check passed.
//   report_tool write DIR                 runs in DIR/run-0, DIR/run-1, the report in DIR/report
//   report_tool check-dom FILE            the DOM dumped by `chromium --dump-dom`
//   report_tool check-screenshot PNG W H  the page's screenshot at W x H pixels
#include "data/image_io.h"
#include "tests/trainer/eval/report_fixture.h"
#include "trainer/eval/eval_report.h"

#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

namespace {

namespace fs = std::filesystem;
namespace rf = lookahead::test::report;

// Counts from the fixture: 2 runs x 2 identities x 2 prompts x 2 samples, one image not saved.
constexpr int kRuns = 2, kReferences = 4, kGenerations = 15;
constexpr int kImageSide = 128;  // CSS size of grid images

int failures = 0;

void check(bool ok, const std::string& what) {
  std::cout << (ok ? "ok    " : "FAIL  ") << what << "\n";
  if (!ok) ++failures;
}

std::string read(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream s;
  s << file.rdbuf();
  return s.str();
}

int count(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  return static_cast<int>(std::distance(std::sregex_iterator(text.begin(), text.end(), re), std::sregex_iterator()));
}

int write(const fs::path& dir) {
  std::vector<lookahead::trainer::ReportEntry> entries;
  const auto runs = rf::two_runs();
  for (size_t i = 0; i < runs.size(); ++i)
    entries.push_back(lookahead::trainer::load_report_entry(rf::write_run(dir / ("run-" + std::to_string(i)), runs[i])));
  lookahead::trainer::write_report(entries, (dir / "report").string(), "Report test");
  std::cout << (dir / "report" / "report.html").string() << "\n";
  return 0;
}

int check_dom(const std::string& path) {
  const std::string dom = read(path);
  check(dom.find("<h1>Report test</h1>") != std::string::npos, "h1 title");
  // The parser keeps the summary rows inside table#summary's tbody only if the markup is well formed.
  const std::smatch table = [&] {
    std::smatch m;
    std::regex_search(dom, m, std::regex("<table id=\"summary\">([\\s\\S]*?)</table>"));
    return m;
  }();
  check(!table.empty(), "table#summary present");
  const std::string summary = table.empty() ? "" : table[1].str();
  const int rows = count(summary, "<tr class=\"entry\"");
  check(rows == kRuns, "table#summary rows: " + std::to_string(rows) + " (expected " + std::to_string(kRuns) + ")");
  check(count(summary, "<tbody>[\\s\\S]*<tr class=\"entry\"[\\s\\S]*</tbody>") == 1, "rows inside tbody");
  const int grids = count(dom, "<div class=\"grid\"");
  check(grids == kRuns, "div.grid: " + std::to_string(grids));
  const int generations = count(dom, "<img class=\"generation\" src=\"[^\"]+\"");
  check(generations == kGenerations, "img.generation: " + std::to_string(generations));
  const int references = count(dom, "<img class=\"reference\" src=\"[^\"]+\"");
  check(references == kReferences, "img.reference: " + std::to_string(references));
  const int points = count(dom, "<circle class=\"point\"");
  check(points == kRuns, "svg#id-vs-clip circle.point: " + std::to_string(points));
  check(dom.find("<svg id=\"id-vs-clip\"") != std::string::npos, "svg#id-vs-clip present");
  check(dom.find("<script") == std::string::npos, "no <script> element (prompts stay text)");
  check(dom.find("a photo of &lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; friends") != std::string::npos,
        "prompt rendered as text");
  return failures == 0 ? 0 : 1;
}

int check_screenshot(const std::string& path, int64_t width, int64_t height) {
  const std::string bytes = read(path);
  check(!bytes.empty(), "screenshot " + path + " exists");
  if (bytes.empty()) return 1;
  const at::Tensor image =  // [H, W, 3] uint8
      lookahead::data::decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
  check(image.size(0) == height && image.size(1) == width,
        "screenshot size " + std::to_string(image.size(1)) + "x" + std::to_string(image.size(0)));
  const at::Tensor pixels = image.reshape({-1, 3}).to(at::kInt);  // [H*W, 3]
  auto near = [&](const uint8_t color[3]) {
    const at::Tensor target = at::tensor({color[0], color[1], color[2]}, at::kInt);
    return (pixels - target).abs().amax(1).le(2).sum().item<int64_t>();
  };
  const int64_t total = pixels.size(0);
  const int64_t white = pixels.ge(250).all(1).sum().item<int64_t>();
  const int64_t magenta = near(rf::kGenerationColor), green = near(rf::kReferenceColor);
  const int64_t distinct = std::get<0>(at::_unique2(pixels.select(1, 0) * 65536 + pixels.select(1, 1) * 256 +
                                                    pixels.select(1, 2)))
                               .numel();
  std::cout << "pixels " << total << ", white " << white << ", generation colour " << magenta
            << ", reference colour " << green << ", distinct colours " << distinct << "\n";
  check(white < total * 0.97, "page is not blank (non-white pixels " + std::to_string(total - white) + ")");
  check(distinct >= 50, "text and plot rendered (distinct colours " + std::to_string(distinct) + ")");
  // Every image decoded and painted at its CSS size (a broken image paints an icon, not the colour).
  const int64_t area = kImageSide * kImageSide;
  check(magenta >= static_cast<int64_t>(kGenerations * area * 0.95),
        "all " + std::to_string(kGenerations) + " generations painted (" + std::to_string(magenta) + " px)");
  check(magenta <= static_cast<int64_t>(kGenerations * area * 1.05), "no extra generation-coloured area");
  check(green >= static_cast<int64_t>(kReferences * area * 0.95),
        "all " + std::to_string(kReferences) + " references painted (" + std::to_string(green) + " px)");
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  try {
    if (args.size() == 2 && args[0] == "write") return write(args[1]);
    if (args.size() == 2 && args[0] == "check-dom") return check_dom(args[1]);
    if (args.size() == 4 && args[0] == "check-screenshot")
      return check_screenshot(args[1], std::stoll(args[2]), std::stoll(args[3]));
  } catch (const std::exception& e) {
    std::cerr << "report_tool: " << e.what() << "\n";
    return 1;
  }
  std::cerr << "usage: report_tool write DIR | check-dom FILE | check-screenshot PNG W H\n";
  return 2;
}
