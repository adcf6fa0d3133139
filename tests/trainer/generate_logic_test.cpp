// trainer/generate: the pure logic of `lookahead data generate` — the identity bank and identity
// files, prompt templates and prompt files, the per-identity plan, the identity-consistency filter
// on hand-built embeddings (exact keep / drop sets), duplicate identities, the similarity
// histograms and the HTML report.
#include <gtest/gtest.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/seed.h"
#include "data/image_io.h"
#include "trainer/generate/generate_error.h"
#include "trainer/generate/generate_report.h"
#include "trainer/generate/generation_plan.h"
#include "trainer/generate/identity_bank.h"
#include "trainer/generate/identity_filter.h"
#include "trainer/generate/prompt_bank.h"

namespace lookahead::trainer::generate {
namespace {

namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

size_t occurrences(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("la_generate_logic_test." + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& bytes) const {
    const std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  // `call` throws GenerateInputError for `path` at `line` (-1: the whole file) whose text holds `part`.
  static void expect_input_error(const std::function<void()>& call, const std::string& path, int64_t line,
                                 const std::string& part) {
    try {
      call();
      ADD_FAILURE() << "no GenerateInputError for " << path << " (expected: " << part << ")";
    } catch (const GenerateInputError& e) {
      EXPECT_EQ(e.file(), path);
      EXPECT_EQ(e.line(), line) << e.what();
      const std::string where = line >= 0 ? path + ": line " + std::to_string(line) + ": " : path + ": ";
      EXPECT_EQ(std::string(e.what()).rfind(where, 0), 0u) << e.what();
      EXPECT_TRUE(contains(e.what(), part)) << e.what() << "\nexpected: " << part;
    }
  }

  fs::path dir_;
};

// ---- identity bank ---------------------------------------------------------------------------

TEST(IdentityBank, DependsOnlyOnSeedAndIndex) {
  // Pinned: the bank is part of the data set's definition (a change regenerates different people).
  EXPECT_EQ(describe_identity(0, 0), describe_identity(0, 0));
  std::vector<std::string> forward;
  for (int64_t i = 0; i < 50; ++i) forward.push_back(describe_identity(3, i));
  for (int64_t i = 49; i >= 0; --i) EXPECT_EQ(describe_identity(3, i), forward[static_cast<size_t>(i)]);
  EXPECT_NE(describe_identity(3, 0), describe_identity(4, 0));
  EXPECT_NE(describe_identity(3, 0), describe_identity(3, 1));
  EXPECT_THROW(describe_identity(0, -1), c10::Error);
}

TEST(IdentityBank, PinnedExample) {
  EXPECT_EQ(describe_identity(0, 0),
            "a 29-year-old man of North African descent with tan skin, buzz-cut jet-black hair and hazel "
            "eyes, wearing a burgundy turtleneck, looking thoughtful");
}

TEST(IdentityBank, DescriptionsReadNaturallyAndRarelyRepeat) {
  constexpr int64_t kCount = 20000;
  std::set<std::string> distinct;
  std::set<std::string> genders;
  int64_t glasses = 0, bearded_men = 0, men = 0;
  for (int64_t i = 0; i < kCount; ++i) {
    const std::string d = describe_identity(11, i);
    ASSERT_FALSE(d.empty());
    EXPECT_TRUE(contains(d, "-year-old ")) << d;
    const int64_t age = std::stoll(d.substr(d.find(' ') + 1));
    EXPECT_EQ(d.substr(0, d.find(' ')), age == 18 ? "an" : "a") << d;
    EXPECT_TRUE(contains(d, " skin, ")) << d;
    EXPECT_TRUE(contains(d, " eyes")) << d;
    EXPECT_TRUE(contains(d, ", wearing ")) << d;
    EXPECT_FALSE(contains(d, "%")) << d;
    EXPECT_FALSE(contains(d, "  ")) << d;
    EXPECT_LE(d.size(), kMaxDescriptionBytes) << d;
    EXPECT_GE(age, 18);
    EXPECT_LE(age, 79);
    const bool woman = contains(d, "-year-old woman "), man = contains(d, "-year-old man ");
    genders.insert(woman ? "woman" : man ? "man" : contains(d, "-year-old androgynous person ") ? "person" : d);
    if (contains(d, "afro") || contains(d, "locs") || contains(d, "braids") || contains(d, "cornrows")) {
      EXPECT_TRUE(contains(d, "African") || contains(d, "mixed") || contains(d, "Latin") || contains(d, "Pacific"))
          << d;
    }
    const bool facial_hair =
        contains(d, "beard") || contains(d, "stubble") || contains(d, "goatee") || contains(d, "moustache");
    if (facial_hair) {
      EXPECT_TRUE(man) << d;  // only where plausible
    }
    men += man;
    bearded_men += facial_hair;
    glasses += contains(d, "glasses");
    // Greys come with age.
    if (contains(d, "salt-and-pepper") || contains(d, " grey hair") || contains(d, "grey locs")) {
      EXPECT_GE(age, 45) << d;
    }
    if (contains(d, "silver") || contains(d, "white hair") || contains(d, "white locs")) {
      EXPECT_GE(age, 60) << d;
    }
    distinct.insert(d);
  }
  EXPECT_EQ(static_cast<int64_t>(distinct.size()), kCount);
  EXPECT_EQ(genders, (std::set<std::string>{"woman", "man", "person"}));
  EXPECT_NEAR(static_cast<double>(glasses) / kCount, 0.3, 0.02);
  EXPECT_NEAR(static_cast<double>(bearded_men) / static_cast<double>(men), 0.5, 0.03);
}

TEST(IdentityBank, CombinationCount) {
  EXPECT_GT(identity_combination_count(), 10'000'000);
  EXPECT_EQ(identity_combination_count(), 440'064'967'680);  // as identity_bank.cpp states
}

// ---- identity files --------------------------------------------------------------------------

using IdentityFile = TempDir;

TEST_F(IdentityFile, ReadsUnicodeAndCrlf) {
  const std::string zoe = "Zo\xC3\xAB, a 30-year-old violinist with freckles";
  const std::string cjk =
      "\xE4\xB8\x80\xE4\xBD\x8D\xE6\x88\xB4\xE7\x9C\xBC\xE9\x95\x9C\xE7\x9A\x84\xE8\x80\x81\xE4"
      "\xBA\xBA";                                                       // a CJK description
  const std::string accent = "Jos\xC3\xA9, with a cafe\xCC\x81 apron";  // combining acute (a mark) is fine
  const std::string path = write("ids.txt", "\xEF\xBB\xBF" + zoe + "\r\n" + cjk + "\r\n  " + accent + "  \r\n" +
                                                std::string(300, 'x'));  // no final newline; exactly the limit
  EXPECT_EQ(read_identity_file(path), (std::vector<std::string>{zoe, cjk, accent, std::string(300, 'x')}));
}

TEST_F(IdentityFile, RefusesBadInputNamingFileAndLine) {
  const auto read = [](const std::string& p) { return [p] { read_identity_file(p); }; };
  std::string p = write("blank.txt", "one\ntwo\n\nthree\n");
  expect_input_error(read(p), p, 3, "blank");
  p = write("spaces.txt", "one\n  \t \ntwo\n");
  expect_input_error(read(p), p, 2, "blank");
  p = write("trailing_blank.txt", "one\n\n");
  expect_input_error(read(p), p, 2, "blank");
  p = write("utf8.txt", "fine\nbad \xC3\x28 byte\n");
  expect_input_error(read(p), p, 2, "not valid UTF-8 (byte 5");
  p = write("latin1.txt", "Zo\xEB\n");
  expect_input_error(read(p), p, 1, "not valid UTF-8");
  p = write("overlong.txt", "a\nb\n\xC0\xAF\n");
  expect_input_error(read(p), p, 3, "not valid UTF-8");
  p = write("zwj.txt", "a woman\na man\xE2\x80\x8D with a hat\n");
  expect_input_error(read(p), p, 2, "column 6: U+200D is an invisible format character");
  p = write("bidi.txt", "\xE2\x80\xAEreversed\n");
  expect_input_error(read(p), p, 1, "U+202E is an invisible format character");
  p = write("fffd.txt",
            "a\nmis\xEF\xBF\xBD"
            "decoded\n");
  expect_input_error(read(p), p, 2, "U+FFFD is the replacement character");
  p = write("tab.txt", "a\tb\n");
  expect_input_error(read(p), p, 1, "U+0009 is a control character");
  p = write("cr.txt", "a\rb\n");
  expect_input_error(read(p), p, 1, "U+000D is a control character");
  p = write("private.txt", "x\xEE\x80\x80\n");
  expect_input_error(read(p), p, 1, "U+E000 is a private-use character");
  p = write("plane15.txt", "x\xF3\xB0\x80\x80\n");  // U+F0000: private use too (plane 15)
  expect_input_error(read(p), p, 1, "U+F0000 is a private-use character");
  p = write("noncharacter.txt", "x\xEF\xBF\xBE\n");  // U+FFFE, a noncharacter: unassigned
  expect_input_error(read(p), p, 1, "U+FFFE is an unassigned code point");
  p = write("separator.txt", "x\xE2\x80\xA8y\n");
  expect_input_error(read(p), p, 1, "U+2028 is a line or paragraph separator");
  p = write("long.txt", "ok\n" + std::string(301, 'y') + "\n");
  expect_input_error(read(p), p, 2, "301 bytes long; at most 300");
  p = write("duplicate.txt", "x\ny\nz\n y\n");
  expect_input_error(read(p), p, 4, "repeats line 2");
  p = write("empty.txt", "");
  expect_input_error(read(p), p, -1, "is empty");
  p = write("bom_only.txt", "\xEF\xBB\xBF");
  expect_input_error(read(p), p, -1, "is empty");
  p = (dir_ / "missing.txt").string();
  expect_input_error(read(p), p, -1, "does not exist");
  p = dir_.string();
  expect_input_error(read(p), p, -1, "not a regular file");
}

// ---- prompt templates ------------------------------------------------------------------------

TEST(PromptBank, OfficialTemplates) {
  const PromptTemplates t = official_templates();
  EXPECT_EQ(t.vanilla, std::vector<std::string>{"A photo of {concept}"});
  EXPECT_EQ(t.stylized,
            (std::vector<std::string>{"A colorful graffiti of {concept}", "A pencil drawing of {concept}",
                                      "A watercolor painting of {concept}", "A drawing of {concept} in a comic book",
                                      "An oil painting of {concept}"}));
  EXPECT_EQ(fill("A drawing of {concept} in a comic book", "face"), "A drawing of face in a comic book");
  EXPECT_THROW(fill("no placeholder", "face"), c10::Error);
  EXPECT_THROW(fill("{concept} and {concept}", "face"), c10::Error);
}

using PromptFile = TempDir;

TEST_F(PromptFile, ReadsTemplates) {
  const std::string path = write("prompts.txt",
                                 "# generation prompts\r\n"
                                 "vanilla: A photo of {concept}\r\n"
                                 "\r\n"
                                 "  style:   A charcoal sketch of {concept}  \n"
                                 "vanilla:A close-up portrait of {concept}, soft light\n"
                                 "style: A photo of {concept}\n");  // the same text in the other kind is fine
  const PromptTemplates t = read_prompt_file(path);
  EXPECT_EQ(t.vanilla,
            (std::vector<std::string>{"A photo of {concept}", "A close-up portrait of {concept}, soft light"}));
  EXPECT_EQ(t.stylized, (std::vector<std::string>{"A charcoal sketch of {concept}", "A photo of {concept}"}));
}

TEST_F(PromptFile, RefusesBadInputNamingFileAndLine) {
  const auto read = [](const std::string& p) { return [p] { read_prompt_file(p); }; };
  std::string p = write("none.txt", "vanilla: A photo of {concept}\nstyle: A painting of a face\n");
  expect_input_error(read(p), p, 2, "{concept} exactly once, it holds it 0 times");
  p = write("twice.txt", "vanilla: {concept} next to {concept}\n");
  expect_input_error(read(p), p, 1, "it holds it 2 times");
  p = write("kind.txt", "vanilla: A photo of {concept}\nstlye: A sketch of {concept}\n");
  expect_input_error(read(p), p, 2, "expected 'vanilla: <template>' or 'style: <template>'");
  p = write("no_kind.txt", "A photo of {concept}\n");
  expect_input_error(read(p), p, 1, "expected 'vanilla: <template>'");
  p = write("brace.txt", "vanilla: A photo of {concept} in {city}\n");
  expect_input_error(read(p), p, 1, "{concept} is the only placeholder");
  p = write("empty_template.txt", "# x\nvanilla:   \n");
  expect_input_error(read(p), p, 2, "the vanilla template is empty");
  p = write("duplicate.txt",
            "vanilla: A photo of {concept}\nstyle: A sketch of {concept}\n\nstyle: A sketch of {concept}\n");
  expect_input_error(read(p), p, 4, "repeats the style template of line 2");
  p = write("zwj.txt", "vanilla: A photo\xE2\x80\x8D of {concept}\n");
  expect_input_error(read(p), p, 1, "U+200D");
  p = write("long.txt", "vanilla: {concept}" + std::string(300, 'z') + "\n");
  expect_input_error(read(p), p, 1, "bytes long");
  p = write("styles_only.txt", "style: A sketch of {concept}\n");
  expect_input_error(read(p), p, -1, "no 'vanilla:' template");
  p = write("comments_only.txt", "# nothing here\n\n");
  expect_input_error(read(p), p, -1, "no 'vanilla:' template");
  p = write("empty.txt", "");
  expect_input_error(read(p), p, -1, "is empty");
  p = (dir_ / "missing.txt").string();
  expect_input_error(read(p), p, -1, "does not exist");
}

// ---- the plan --------------------------------------------------------------------------------

TEST(GenerationPlan, OfficialOrderPromptsAndSeeds) {
  const std::string description = "a 34-year-old woman with short curly black hair";
  PlanOptions options;
  options.seed = 1234;
  const std::vector<PlannedImage> plan = plan_identity(options, official_templates(), 17, description);
  ASSERT_EQ(plan.size(), 80u);  // 40 + 8 x 5
  const std::vector<std::string> styles = official_templates().stylized;
  std::set<uint64_t> seeds;
  std::set<uint32_t> low_bits;
  for (size_t i = 0; i < plan.size(); ++i) {
    const PlannedImage& image = plan[i];
    EXPECT_EQ(image.identity, 17);
    EXPECT_EQ(image.index, static_cast<int64_t>(i));
    EXPECT_EQ(image.vanilla, i < 40);
    const std::string tmpl = i < 40 ? std::string("A photo of {concept}") : styles[(i - 40) % 5];
    EXPECT_EQ(image.full_prompt, fill(tmpl, description));
    EXPECT_EQ(image.training_prompt, fill(tmpl, "face"));
    EXPECT_LT(image.seed, uint64_t{1} << 63);
    seeds.insert(image.seed);
    low_bits.insert(static_cast<uint32_t>(image.seed));
  }
  EXPECT_EQ(plan[0].training_prompt, "A photo of face");
  EXPECT_EQ(plan[40].full_prompt, "A colorful graffiti of " + description);
  EXPECT_EQ(plan[44].training_prompt, "An oil painting of face");
  EXPECT_EQ(plan[45].training_prompt, "A colorful graffiti of face");
  EXPECT_EQ(plan[79].training_prompt, "An oil painting of face");
  EXPECT_EQ(seeds.size(), 80u);
  EXPECT_EQ(low_bits.size(), 80u);  // torch's CPU generator seeds from the low 32 bits
  EXPECT_EQ(plan[0].seed, common::derive_seed(1234, 17, 0) >> 1);

  // The same arguments plan the same images; another identity or plan seed, other seeds.
  const std::vector<PlannedImage> again = plan_identity(options, official_templates(), 17, description);
  for (size_t i = 0; i < plan.size(); ++i) EXPECT_EQ(again[i].seed, plan[i].seed);
  EXPECT_NE(plan_identity(options, official_templates(), 18, description)[0].seed, plan[0].seed);
  options.seed = 1235;
  EXPECT_NE(plan_identity(options, official_templates(), 17, description)[0].seed, plan[0].seed);
}

TEST(GenerationPlan, CyclesVanillaTemplatesAndUsesThePlaceholder) {
  PromptTemplates templates{{"A photo of {concept}", "A portrait of {concept}"}, {"A sketch of {concept}"}};
  PlanOptions options;
  options.vanilla_per_identity = 5;
  options.style_rounds = 2;
  options.placeholder = "sks person";
  const std::vector<PlannedImage> plan = plan_identity(options, templates, 0, "Zo\xC3\xAB");
  std::vector<std::string> training, full;
  for (const PlannedImage& image : plan) {
    training.push_back(image.training_prompt);
    full.push_back(image.full_prompt);
  }
  EXPECT_EQ(training,
            (std::vector<std::string>{"A photo of sks person", "A portrait of sks person", "A photo of sks person",
                                      "A portrait of sks person", "A photo of sks person", "A sketch of sks person",
                                      "A sketch of sks person"}));
  EXPECT_EQ(full[1], "A portrait of Zo\xC3\xAB");
  options.style_rounds = 0;
  EXPECT_EQ(plan_identity(options, templates, 0, "x").size(), 5u);

  options.vanilla_per_identity = 0;
  EXPECT_THROW(plan_identity(options, templates, 0, "x"), c10::Error);
  options.vanilla_per_identity = 1;
  options.placeholder = "";
  EXPECT_THROW(plan_identity(options, templates, 0, "x"), c10::Error);
}

// ---- the filter ------------------------------------------------------------------------------

constexpr int64_t kDim = 512;

at::Tensor basis(int64_t k) {
  at::Tensor v = at::zeros({kDim}, at::kDouble);
  v[k] = 1.0;
  return v;
}

// Unit vector with cosine `c` to e0, the rest along e_k.
at::Tensor at_cosine(double c, int64_t k) { return c * basis(0) + std::sqrt(1 - c * c) * basis(k); }

at::Tensor stack(const std::vector<at::Tensor>& rows) { return at::stack(rows).to(at::kFloat); }

// Five "members" (pairwise cosine 0.9: sqrt(0.9) along e0 each) and two outliers (cosine 0.1 to
// every member) at indices 2 and 5; then `extra` rows.
struct Identity {
  std::vector<at::Tensor> rows;
  std::vector<bool> face, vanilla;
  void add(at::Tensor row, bool has_face, bool is_vanilla) {
    rows.push_back(std::move(row));
    face.push_back(has_face);
    vanilla.push_back(is_vanilla);
  }
};

const double kMember = std::sqrt(0.9);

Identity five_and_two_outliers() {
  Identity id;
  int64_t axis = 1;
  for (int64_t i = 0; i < 7; ++i) {
    const bool outlier = i == 2 || i == 5;
    id.add(at_cosine(outlier ? 0.1 / kMember : kMember, axis++), true, true);
  }
  return id;
}

std::vector<int64_t> with_decision(const FilterResult& r, Decision d) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < r.decisions.size(); ++i)
    if (r.decisions[i] == d) out.push_back(static_cast<int64_t>(i));
  return out;
}

TEST(IdentityFilter, KeepsExactlyTheConsistentVanillaImages) {
  const Identity id = five_and_two_outliers();
  const FilterResult r = filter_identity(stack(id.rows), id.face, id.vanilla, FilterOptions{});
  EXPECT_TRUE(r.identity_kept);
  EXPECT_EQ(with_decision(r, Decision::kKept), (std::vector<int64_t>{0, 1, 3, 4, 6}));
  EXPECT_EQ(with_decision(r, Decision::kBelowThreshold), (std::vector<int64_t>{2, 5}));
  const std::set<int64_t> members{0, 1, 3, 4, 6};
  ASSERT_TRUE(members.count(r.medoid)) << r.medoid;
  for (int64_t i = 0; i < 7; ++i) {
    const double expected = i == r.medoid ? 1.0 : members.count(i) ? 0.9 : 0.1;
    EXPECT_NEAR(r.scores[static_cast<size_t>(i)], expected, 1e-5) << i;
  }
  // Centroid: the mean of the five members, normalised: sqrt(0.9) along e0 over sqrt(0.9 + 0.1 / 5).
  ASSERT_TRUE(r.centroid.defined());
  EXPECT_EQ(r.centroid.sizes(), (at::IntArrayRef{kDim}));
  EXPECT_EQ(r.centroid.scalar_type(), at::kFloat);
  EXPECT_NEAR(r.centroid[0].item<double>(), kMember / std::sqrt(0.92), 1e-6);
  EXPECT_NEAR(r.centroid.norm().item<double>(), 1.0, 1e-6);

  // Six survivors required: the identity goes, every image with it.
  FilterOptions strict;
  strict.min_survivors = 6;
  const FilterResult dropped = filter_identity(stack(id.rows), id.face, id.vanilla, strict);
  EXPECT_FALSE(dropped.identity_kept);
  EXPECT_EQ(with_decision(dropped, Decision::kIdentityDropped), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_FALSE(dropped.centroid.defined());
  EXPECT_NEAR(dropped.scores[2], 0.1, 1e-5);  // scores stay for the report
  strict.min_survivors = 5;
  EXPECT_TRUE(filter_identity(stack(id.rows), id.face, id.vanilla, strict).identity_kept);

  // A stricter threshold than every member's cosine: only the medoid itself survives.
  FilterOptions tight;
  tight.keep_threshold = 0.95;
  tight.min_survivors = 1;
  const FilterResult alone = filter_identity(stack(id.rows), id.face, id.vanilla, tight);
  EXPECT_EQ(with_decision(alone, Decision::kKept), (std::vector<int64_t>{alone.medoid}));
}

TEST(IdentityFilter, MedoidMaximisesMeanCosine) {
  // Unit vectors in a plane at 0, 10, 20, 30 and 40 degrees: 20 degrees is the most central. Kept at
  // cos >= 0.95 (within 18.2 degrees of it): 10, 20 and 30.
  std::vector<at::Tensor> rows;
  const std::vector<double> degrees{0, 10, 20, 30, 40};
  for (double d : degrees) {
    const double a = d * M_PI / 180;
    rows.push_back(std::cos(a) * basis(0) + std::sin(a) * basis(1));
  }
  FilterOptions options;
  options.keep_threshold = 0.95;
  options.min_survivors = 1;
  const std::vector<bool> all(5, true);
  const FilterResult r = filter_identity(stack(rows), all, all, options);
  EXPECT_EQ(r.medoid, 2);
  for (size_t i = 0; i < degrees.size(); ++i) EXPECT_NEAR(r.scores[i], std::cos((degrees[i] - 20) * M_PI / 180), 1e-6);
  EXPECT_EQ(with_decision(r, Decision::kKept), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(with_decision(r, Decision::kBelowThreshold), (std::vector<int64_t>{0, 4}));
}

TEST(IdentityFilter, ImagesWithoutAFace) {
  Identity id = five_and_two_outliers();
  // A vanilla image without a face whose (garbage) row would otherwise be the perfect medoid,
  // and a stylized one.
  id.add(basis(0).to(at::kDouble) * 0, false, true);
  id.add(basis(0), false, false);
  const FilterResult r = filter_identity(stack(id.rows), id.face, id.vanilla, FilterOptions{});
  EXPECT_EQ(with_decision(r, Decision::kKept), (std::vector<int64_t>{0, 1, 3, 4, 6}));
  EXPECT_EQ(with_decision(r, Decision::kNoFace), (std::vector<int64_t>{7, 8}));
  EXPECT_TRUE(std::isnan(r.scores[7]));
  EXPECT_TRUE(std::isnan(r.scores[8]));

  // No vanilla face at all: no medoid, nothing kept, the identity dropped.
  const std::vector<bool> none(id.rows.size(), false);
  const FilterResult empty = filter_identity(stack(id.rows), none, id.vanilla, FilterOptions{});
  EXPECT_EQ(empty.medoid, -1);
  EXPECT_FALSE(empty.identity_kept);
  EXPECT_EQ(with_decision(empty, Decision::kIdentityDropped).size(), id.rows.size());
  for (float s : empty.scores) EXPECT_TRUE(std::isnan(s));
}

TEST(IdentityFilter, StylizedRules) {
  Identity id = five_and_two_outliers();
  // Stylized images at cosine 0.9, 0.3 and -0.2 to every member (so to the medoid), and one without a face.
  for (const double c : {0.9, 0.3, -0.2})
    id.add(at_cosine(c / kMember, 20 + static_cast<int64_t>(id.rows.size())), true, false);
  id.add(at_cosine(0.5, 40), false, false);
  const at::Tensor e = stack(id.rows);

  const FilterResult face_only = filter_identity(e, id.face, id.vanilla, FilterOptions{});
  EXPECT_EQ(with_decision(face_only, Decision::kKept), (std::vector<int64_t>{0, 1, 3, 4, 6, 7, 8, 9}));
  EXPECT_EQ(with_decision(face_only, Decision::kBelowThreshold), (std::vector<int64_t>{2, 5}));
  EXPECT_EQ(with_decision(face_only, Decision::kNoFace), (std::vector<int64_t>{10}));
  EXPECT_NEAR(face_only.scores[8], 0.3, 1e-5);
  EXPECT_NEAR(face_only.scores[9], -0.2, 1e-5);

  FilterOptions relaxed;
  relaxed.stylized_threshold = 0.25;
  const FilterResult r = filter_identity(e, id.face, id.vanilla, relaxed);
  EXPECT_EQ(with_decision(r, Decision::kKept), (std::vector<int64_t>{0, 1, 3, 4, 6, 7, 8}));
  EXPECT_EQ(with_decision(r, Decision::kBelowThreshold), (std::vector<int64_t>{2, 5, 9}));
  relaxed.stylized_threshold = 0.5;
  EXPECT_EQ(with_decision(filter_identity(e, id.face, id.vanilla, relaxed), Decision::kKept),
            (std::vector<int64_t>{0, 1, 3, 4, 6, 7}));
  // Stylized images never count as survivors: five vanilla kept, six needed.
  relaxed.min_survivors = 6;
  EXPECT_FALSE(filter_identity(e, id.face, id.vanilla, relaxed).identity_kept);
}

TEST(IdentityFilter, ValidatesOptionsAndInputs) {
  const auto message = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  FilterOptions o;
  o.keep_threshold = 1.5;
  EXPECT_TRUE(contains(message([&] { o.validate(); }), "keep_threshold must be a cosine in [-1, 1], got 1.5"));
  o = FilterOptions{};
  o.duplicate_threshold = -1.01;
  EXPECT_TRUE(contains(message([&] { o.validate(); }), "duplicate_threshold"));
  o = FilterOptions{};
  o.stylized_threshold = std::nan("");
  EXPECT_TRUE(contains(message([&] { o.validate(); }), "stylized_threshold"));
  o = FilterOptions{};
  o.min_survivors = 0;
  EXPECT_TRUE(contains(message([&] { o.validate(); }), "min_survivors must be >= 1, got 0"));
  EXPECT_NO_THROW(FilterOptions{}.validate());

  const at::Tensor e = stack({basis(0), basis(1)});
  EXPECT_TRUE(contains(message([&] {
                         filter_identity(e, {true}, {true, true}, FilterOptions{});
                       }),
                       "one entry per embedding row"));
  EXPECT_TRUE(contains(message([&] {
                         filter_identity(e * 2, {true, true}, {true, true}, FilterOptions{});
                       }),
                       "embedding row 0 (an image with a face) must have unit norm"));
  EXPECT_TRUE(contains(message([&] { filter_identity(e[0], {true}, {true}, FilterOptions{}); }), "[n, D]"));
}

TEST(Duplicates, ExactPairs) {
  // Ids 10, 3, 7, 5: 10 and 3 at cosine 0.8, 7 and 5 at 0.6, everything else orthogonal.
  const at::Tensor c = stack({basis(0), 0.8 * basis(0) + 0.6 * basis(1), basis(2), 0.6 * basis(2) + 0.8 * basis(3)});
  const std::vector<int64_t> ids{10, 3, 7, 5};
  std::vector<double> cosines;
  EXPECT_EQ(find_duplicates(c, ids, 0.5, &cosines), (std::vector<std::pair<int64_t, int64_t>>{{3, 10}, {5, 7}}));
  ASSERT_EQ(cosines.size(), 2u);
  EXPECT_NEAR(cosines[0], 0.8, 1e-6);
  EXPECT_NEAR(cosines[1], 0.6, 1e-6);
  EXPECT_EQ(find_duplicates(c, ids, 0.7, &cosines), (std::vector<std::pair<int64_t, int64_t>>{{3, 10}}));
  EXPECT_EQ(cosines.size(), 1u);
  EXPECT_TRUE(find_duplicates(c, ids, 0.9).empty());
  EXPECT_THROW(find_duplicates(c, {1, 2}, 0.5), c10::Error);
  EXPECT_THROW(find_duplicates(c, ids, 2.0), c10::Error);
}

TEST(Duplicates, AcrossRowBlocks) {
  // 1030 one-hot centroids; 1028 repeats 5 and 1029 repeats 1027 (the second block of 1024 rows).
  constexpr int64_t kCount = 1030;
  at::Tensor c = at::zeros({kCount, 1100});
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < kCount; ++i) {
    c[i][i < 1028 ? i : i == 1028 ? 5 : 1027] = 1.0;
    ids.push_back(i);
  }
  EXPECT_EQ(find_duplicates(c, ids, 0.5), (std::vector<std::pair<int64_t, int64_t>>{{5, 1028}, {1027, 1029}}));
}

// ---- similarity histograms -------------------------------------------------------------------

at::Tensor plane(double degrees) {
  if (degrees == 90) return at::tensor({0.0, 1.0});
  if (degrees == 180) return at::tensor({-1.0, 0.0});
  const double a = degrees * M_PI / 180;
  return at::tensor({std::cos(a), std::sin(a)});
}

TEST(SimilarityHistograms, AllPairsByHand) {
  // Identity 7 at 0 and 60 degrees, identity 2 at 90 and 180, identity 9 at 0, interleaved.
  const at::Tensor e = at::stack({plane(0), plane(90), plane(60), plane(0), plane(180)}).to(at::kFloat);
  const std::vector<int64_t> identity{7, 2, 7, 9, 2};
  // Five bins over [-1, 1]: edges -0.6, -0.2, 0.2, 0.6. Genuine: cos 60 = 0.5, cos 90 = 0. Impostor
  // (8 pairs): 0, -1, 1 (identity 7's 0 degrees); 0.87, -0.5, 0.5 (its 60 degrees); 0, -1 (identity 9 vs 2).
  const auto [genuine, impostor] = similarity_histograms(e, identity, 5, 1000, 0);
  EXPECT_EQ(genuine.lo, -1.0);
  EXPECT_EQ(genuine.hi, 1.0);
  EXPECT_EQ(genuine.counts, (std::vector<int64_t>{0, 0, 1, 1, 0}));
  EXPECT_EQ(impostor.counts, (std::vector<int64_t>{2, 1, 2, 1, 2}));
}

TEST(SimilarityHistograms, SampledPairsAreOfTheirKindAndDeterministic) {
  // Six identities of ten images, each identity one direction: genuine cosines are 1, impostor 0.
  // 270 genuine and 1500 impostor pairs.
  constexpr int64_t kPerIdentity = 10;
  std::vector<at::Tensor> rows;
  std::vector<int64_t> identity;
  for (int64_t i = 0; i < 6 * kPerIdentity; ++i) {
    identity.push_back((i * 7) % 6);  // interleaved
    rows.push_back(basis(identity.back()));
  }
  const at::Tensor e = stack(rows);
  const auto [genuine, impostor] = similarity_histograms(e, identity, 4, 100, 42);
  EXPECT_EQ(genuine.counts, (std::vector<int64_t>{0, 0, 0, 100}));
  EXPECT_EQ(impostor.counts, (std::vector<int64_t>{0, 0, 100, 0}));
  // At 270 the genuine pairs are all taken, the impostor ones still sampled.
  const auto [all_genuine, sampled_impostor] = similarity_histograms(e, identity, 4, 270, 42);
  EXPECT_EQ(all_genuine.counts, (std::vector<int64_t>{0, 0, 0, 270}));
  EXPECT_EQ(sampled_impostor.counts, (std::vector<int64_t>{0, 0, 270, 0}));

  // Varied cosines (deterministic pseudo-random unit vectors): same seed, same histograms; the
  // sample sizes are exact.
  at::manual_seed(0);
  const at::Tensor noisy = at::randn({60, 16}, at::TensorOptions().dtype(at::kFloat));
  const at::Tensor unit = noisy / noisy.norm(2, 1, true);
  const auto a = similarity_histograms(unit, identity, 10, 100, 5);
  const auto b = similarity_histograms(unit, identity, 10, 100, 5);
  EXPECT_EQ(a.first.counts, b.first.counts);
  EXPECT_EQ(a.second.counts, b.second.counts);
  int64_t g = 0, i = 0;
  for (int64_t c : a.first.counts) g += c;
  for (int64_t c : a.second.counts) i += c;
  EXPECT_EQ(g, 100);
  EXPECT_EQ(i, 100);
  const auto other_seed = similarity_histograms(unit, identity, 10, 100, 6);
  EXPECT_NE(a.second.counts, other_seed.second.counts);
}

// ---- the report ------------------------------------------------------------------------------

std::vector<uint8_t> decode_base64(const std::string& text) {
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<uint8_t> out;
  uint32_t bits = 0;
  int count = 0;
  for (char ch : text) {
    if (ch == '=') break;
    bits = bits << 6 | static_cast<uint32_t>(alphabet.find(ch));
    count += 6;
    if (count >= 8) {
      count -= 8;
      out.push_back(static_cast<uint8_t>(bits >> count & 0xFF));
    }
  }
  return out;
}

using GenerateReportTest = TempDir;

TEST_F(GenerateReportTest, RendersEscapedGridsStatisticsAndHistograms) {
  const at::Tensor small = at::full({12, 10, 3}, 200, at::kByte);
  const std::vector<uint8_t> png = data::encode_png(small);

  GenerateReport report;
  report.title = "set <1>";
  ReportIdentity first{0, "<script>alert(1)</script> & \"friends\"", true, {}};
  first.images.push_back({png, {}, true, Decision::kKept, 0.91f, "A photo of <b>x</b>", 11});
  first.images.push_back({{}, at::full({40, 30, 3}, 50, at::kByte), true, Decision::kBelowThreshold, 0.2f, "p", 12});
  first.images.push_back({{}, {}, false, Decision::kNoFace, std::nanf(""), "A pencil drawing of x", 13});
  ReportIdentity second{4, "a man", false, {}};
  for (int k = 0; k < 2; ++k) second.images.push_back({png, {}, true, Decision::kIdentityDropped, 0.3f, "q", 20u + k});
  ReportIdentity third{9, "never shown", true, {}};
  third.images.push_back({png, {}, true, Decision::kKept, 1.0f, "r", 30});
  report.identities = {first, second, third};
  report.images_per_decision = {
      {Decision::kKept, 6}, {Decision::kNoFace, 1}, {Decision::kBelowThreshold, 1}, {Decision::kIdentityDropped, 2}};
  report.identities_kept = 3;
  report.identities_dropped = 2;
  report.duplicates = {{3, 9, 0.83}};
  report.genuine = {-1, 1, {0, 1, 3, 6}};
  report.impostor = {-1, 1, {2, 8, 1, 0}};
  report.keep_threshold = 0.5;
  report.settings = {{"identities_file", "<ids>.txt"}, {"vanilla", 40}};

  const std::string html = render_generate_report(report, 2);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_FALSE(contains(html, "<script"));
  EXPECT_FALSE(contains(html, "<b>x"));
  EXPECT_TRUE(contains(html, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;friends&quot;"));
  EXPECT_TRUE(contains(html, "<title>set &lt;1&gt;</title>"));
  EXPECT_TRUE(contains(html, "&lt;ids&gt;.txt"));
  EXPECT_FALSE(contains(html, "never shown"));

  // One marked tile per image of the two identities shown.
  EXPECT_EQ(occurrences(html, "<figure class=\"tile "), 5u);
  EXPECT_EQ(occurrences(html, "<figure class=\"tile kept\""), 1u);
  EXPECT_EQ(occurrences(html, "<figure class=\"tile rejected\""), 4u);
  EXPECT_EQ(occurrences(html, "tile rejected\" data-decision=\"identity_dropped\""), 2u);
  EXPECT_EQ(occurrences(html, "tile rejected\" data-decision=\"no_face\""), 1u);
  EXPECT_EQ(occurrences(html, "<div class=\"missing\">"), 1u);
  EXPECT_TRUE(contains(html, "vanilla \xC2\xB7 kept \xC2\xB7 0.910"));
  EXPECT_TRUE(contains(html, "stylized \xC2\xB7 no_face \xC2\xB7 \xE2\x80\x94"));
  EXPECT_TRUE(contains(html, "Identity 0 \xE2\x80\x94 kept (1 of 2 vanilla images kept)"));
  EXPECT_TRUE(contains(html, "<section class=\"identity dropped\" data-identity=\"4\">"));
  EXPECT_TRUE(contains(html, "3 of 5 identities omitted"));

  // The thumbnails are data: URIs; the encoded one comes back byte for byte.
  EXPECT_EQ(occurrences(html, "src=\"data:image/png;base64,"), 3u);
  EXPECT_EQ(occurrences(html, "src=\"data:image/jpeg;base64,"), 1u);
  const std::string marker = "src=\"data:image/png;base64,";
  const size_t begin = html.find(marker) + marker.size();
  EXPECT_EQ(decode_base64(html.substr(begin, html.find('"', begin) - begin)), png);
  const std::string jpeg_marker = "src=\"data:image/jpeg;base64,";
  const size_t jpeg_begin = html.find(jpeg_marker) + jpeg_marker.size();
  const std::vector<uint8_t> jpeg = decode_base64(html.substr(jpeg_begin, html.find('"', jpeg_begin) - jpeg_begin));
  EXPECT_EQ(data::decode_image(jpeg.data(), jpeg.size()).sizes(), (at::IntArrayRef{128, 128, 3}));

  // Statistics, histograms with the threshold, duplicates.
  EXPECT_TRUE(
      contains(html, "<tr data-decision=\"kept\"><th>kept</th><td class=\"num\">6</td><td class=\"num\">60.0 %"));
  EXPECT_TRUE(contains(html, "<th>identities dropped</th><td class=\"num\">2</td>"));
  EXPECT_TRUE(contains(html, "<svg id=\"histograms\""));
  EXPECT_TRUE(contains(html, "<path class=\"genuine\" data-pairs=\"10\""));
  EXPECT_TRUE(contains(html, "<path class=\"impostor\" data-pairs=\"11\""));
  EXPECT_TRUE(contains(html, "<line class=\"threshold\" x1=\"477.5\""));  // 50 + (0.5 + 1) / 2 * 570
  EXPECT_TRUE(contains(html, "<tr><td class=\"num\">3</td><td class=\"num\">9</td><td class=\"num\">0.830</td></tr>"));

  // The run's note, escaped, only when set.
  EXPECT_FALSE(contains(html, "run-note"));
  GenerateReport noted = report;
  noted.note = "filter <off>";
  EXPECT_TRUE(contains(render_generate_report(noted, 2), "<p class=\"note\" id=\"run-note\">filter &lt;off&gt;</p>"));

  // Everything shown: no note. Written to disk: the same page.
  GenerateReport listed_all = report;
  listed_all.identities_dropped = 0;
  EXPECT_FALSE(contains(render_generate_report(listed_all, 3), "omitted"));
  const fs::path path = dir_ / "report.html";
  write_generate_report(report, path, 2);
  std::ifstream in(path, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>()), html);
}

}  // namespace
}  // namespace lookahead::trainer::generate
