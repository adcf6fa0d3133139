// The attribute tables are this project's own wording. Each heritage carries the skin tones, hair
// colours and eye colours that are common for it, so that a description reads as one plausible
// person rather than a random mix; within those, every draw is uniform.
#include "trainer/generate/identity_bank.h"

#include <c10/util/Exception.h>

#include <unordered_map>

#include "common/seed.h"
#include "trainer/generate/generate_error.h"
#include "trainer/generate/text_lines.h"

namespace lookahead::trainer::generate {
namespace {

// The hash stream of each attribute; values are part of the bank's definition (changing one
// changes every description).
enum class Stream : uint64_t {
  kAge = 1,
  kGender,
  kHeritage,
  kSkin,
  kHairColour,
  kHairStyle,
  kEyes,
  kHasFacialHair,
  kFacialHair,
  kHasGlasses,
  kGlasses,
  kClothingColour,
  kGarment,
  kExpression,
};

constexpr int64_t kMinAge = 18;
constexpr int64_t kMaxAge = 79;

enum class Gender { kWoman, kMan, kAndrogynous };
constexpr Gender kGenders[] = {Gender::kWoman, Gender::kMan, Gender::kAndrogynous};

using Words = std::vector<const char*>;

struct Heritage {
  const char* phrase;
  Words skins;
  bool wide_hair;  // the whole range of natural hair colours, not only dark ones
  bool wide_eyes;  // light eye colours too
  bool textured;   // afros, locs, braids and cornrows among the hair styles
};

const std::vector<Heritage>& heritages() {
  static const std::vector<Heritage> table = {
      {"of East Asian descent", {"fair", "light", "light olive", "warm beige"}, false, false, false},
      {"of Southeast Asian descent", {"light olive", "tan", "golden-brown", "light brown"}, false, false, false},
      {"of South Asian descent", {"olive", "light brown", "medium brown", "brown", "dark brown"}, false, false, false},
      {"of Middle Eastern descent", {"light", "light olive", "olive", "tan"}, false, true, false},
      {"of North African descent", {"olive", "tan", "light brown", "medium brown"}, false, false, false},
      {"of West African descent", {"medium brown", "brown", "dark brown", "deep brown"}, false, false, true},
      {"of East African descent", {"warm brown", "brown", "dark brown", "deep brown"}, false, false, true},
      {"of Northern European descent", {"pale", "fair", "freckled fair", "light"}, true, true, false},
      {"of Southern European descent", {"light", "light olive", "olive", "tan"}, true, true, false},
      {"of Eastern European descent", {"pale", "fair", "rosy fair", "light"}, true, true, false},
      {"of Latin American descent", {"light", "olive", "tan", "light brown", "medium brown"}, true, true, true},
      {"of Indigenous American descent", {"tan", "golden-brown", "light brown", "medium brown"}, false, false, false},
      {"of Pacific Islander descent",
       {"tan", "golden-brown", "light brown", "medium brown", "brown"},
       false,
       false,
       true},
      {"of mixed heritage", {"light", "olive", "tan", "light brown", "medium brown", "brown"}, true, true, true},
  };
  return table;
}

const Words kDarkHair = {"black", "jet-black", "dark brown", "brown"};
const Words kWideHair = {"black", "dark brown", "brown",  "light brown",       "chestnut",   "auburn",
                         "red",   "copper",     "blonde", "strawberry-blonde", "ash-blonde", "platinum-blonde"};
const Words kGreyFrom45 = {"salt-and-pepper", "grey"};
const Words kGreyFrom60 = {"silver", "white"};

// '%' is where the hair colour goes. Textured styles are drawn only for heritages where they are common.
const Words kWomanHair = {
    "short curly % hair",     "short straight % hair", "shoulder-length wavy % hair", "shoulder-length straight % hair",
    "long straight % hair",   "long wavy % hair",      "long curly % hair",           "long % hair with bangs",
    "% hair in a bob",        "% hair in a pixie cut", "% hair in a high ponytail",   "% hair in a low bun",
    "% hair in a loose braid"};
const Words kWomanTextured = {"% hair in box braids", "% locs", "% hair in an afro", "% hair in cornrows"};
const Words kManHair = {"short % hair",          "short curly % hair",   "cropped % hair", "buzz-cut % hair",
                        "slicked-back % hair",   "side-parted % hair",   "wavy % hair",    "shoulder-length % hair",
                        "long % hair tied back", "% hair in a top knot", "tousled % hair", "thinning % hair"};
const Words kManTextured = {"% locs", "% hair in an afro", "% hair in cornrows", "twisted % hair"};
const Words kAndrogynousHair = {
    "short % hair",    "cropped % hair",        "tousled % hair",          "shoulder-length % hair",
    "% hair in a bob", "% hair in a pixie cut", "% hair with an undercut", "short curly % hair",
    "wavy % hair",     "long % hair tied back"};
const Words kAndrogynousTextured = {"% locs", "% hair in an afro", "twisted % hair"};

const Words kDarkEyes = {"brown", "dark brown", "light brown", "hazel"};
const Words kWideEyes = {"brown", "dark brown", "light brown", "hazel", "amber",
                         "green", "blue",       "light blue",  "grey",  "grey-green"};

const Words kFacialHair = {"stubble",  "a short beard", "a full beard",          "a long beard",
                           "a goatee", "a moustache",   "a neatly trimmed beard"};
const Words kGlasses = {
    "round glasses",         "rectangular glasses", "thick-rimmed glasses", "thin wire-framed glasses",
    "tortoiseshell glasses", "rimless glasses",     "oversized glasses"};
const Words kClothingColours = {"green",    "navy", "red",   "white",      "black", "grey",  "mustard-yellow",
                                "burgundy", "teal", "beige", "light blue", "olive", "orange"};
const Words kGarments = {"sweater",  "t-shirt",    "denim jacket",  "button-up shirt",
                         "hoodie",   "blazer",     "turtleneck",    "leather jacket",
                         "cardigan", "polo shirt", "flannel shirt", "rain jacket"};
const Words kExpressions = {"smiling",
                            "laughing",
                            "grinning",
                            "with a gentle smile",
                            "with a neutral expression",
                            "with a serious expression",
                            "with a calm expression",
                            "looking thoughtful",
                            "with a slight smirk",
                            "with raised eyebrows"};

constexpr double kFacialHairShare = 0.5;  // of men
constexpr double kGlassesShare = 0.3;

// The values an attribute can take once age, gender and heritage are known.
struct Choices {
  Words hair_colours;
  Words hair_styles;
  const Words* eyes = nullptr;
  const Words* facial_hair = nullptr;  // null: never drawn
};

Choices choices_for(int64_t age, Gender gender, const Heritage& heritage) {
  Choices c;
  c.hair_colours = heritage.wide_hair ? kWideHair : kDarkHair;
  if (age >= 45) c.hair_colours.insert(c.hair_colours.end(), kGreyFrom45.begin(), kGreyFrom45.end());
  if (age >= 60) c.hair_colours.insert(c.hair_colours.end(), kGreyFrom60.begin(), kGreyFrom60.end());
  const bool woman = gender == Gender::kWoman, man = gender == Gender::kMan;
  c.hair_styles = woman ? kWomanHair : man ? kManHair : kAndrogynousHair;
  if (heritage.textured) {
    const Words& textured = woman ? kWomanTextured : man ? kManTextured : kAndrogynousTextured;
    c.hair_styles.insert(c.hair_styles.end(), textured.begin(), textured.end());
  }
  c.eyes = heritage.wide_eyes ? &kWideEyes : &kDarkEyes;
  if (gender == Gender::kMan) c.facial_hair = &kFacialHair;
  return c;
}

uint64_t hash(uint64_t seed, int64_t index, Stream stream) {
  return common::derive_seed(seed, static_cast<uint64_t>(index), static_cast<uint64_t>(stream));
}

// Uniform in [0, n) from one hash (Lemire's multiply-shift).
size_t pick(uint64_t h, size_t n) { return static_cast<size_t>((static_cast<unsigned __int128>(h) * n) >> 64); }

bool chance(uint64_t h, double p) { return static_cast<double>(h >> 11) * 0x1.0p-53 < p; }

// "a, b and c".
std::string join_and(const std::vector<std::string>& items) {
  std::string s;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) s += i + 1 == items.size() ? " and " : ", ";
    s += items[i];
  }
  return s;
}

std::string with_article(const std::string& noun_phrase) {
  const char first = noun_phrase.empty() ? ' ' : noun_phrase[0];
  const bool vowel = first == 'a' || first == 'e' || first == 'i' || first == 'o' || first == 'u';
  return (vowel ? "an " : "a ") + noun_phrase;
}

std::string fill_colour(const char* style, const char* colour) {
  std::string s = style;
  s.replace(s.find('%'), 1, colour);
  return s;
}

}  // namespace

std::string describe_identity(uint64_t seed, int64_t index) {
  TORCH_CHECK(index >= 0, "describe_identity: the identity index must be >= 0, got ", index);
  const int64_t age = kMinAge + static_cast<int64_t>(pick(hash(seed, index, Stream::kAge), kMaxAge - kMinAge + 1));
  // About one in ten androgynous, the rest evenly women and men.
  const double g = static_cast<double>(hash(seed, index, Stream::kGender) >> 11) * 0x1.0p-53;
  const Gender gender = g < 0.45 ? Gender::kWoman : g < 0.9 ? Gender::kMan : Gender::kAndrogynous;
  const Heritage& heritage = heritages()[pick(hash(seed, index, Stream::kHeritage), heritages().size())];
  const Choices c = choices_for(age, gender, heritage);

  std::vector<std::string> features;
  features.push_back(std::string(heritage.skins[pick(hash(seed, index, Stream::kSkin), heritage.skins.size())]) +
                     " skin");
  features.push_back(fill_colour(c.hair_styles[pick(hash(seed, index, Stream::kHairStyle), c.hair_styles.size())],
                                 c.hair_colours[pick(hash(seed, index, Stream::kHairColour), c.hair_colours.size())]));
  features.push_back(std::string((*c.eyes)[pick(hash(seed, index, Stream::kEyes), c.eyes->size())]) + " eyes");
  if (c.facial_hair && chance(hash(seed, index, Stream::kHasFacialHair), kFacialHairShare))
    features.push_back((*c.facial_hair)[pick(hash(seed, index, Stream::kFacialHair), c.facial_hair->size())]);

  std::vector<std::string> worn;
  if (chance(hash(seed, index, Stream::kHasGlasses), kGlassesShare))
    worn.push_back(kGlasses[pick(hash(seed, index, Stream::kGlasses), kGlasses.size())]);
  worn.push_back(with_article(
      std::string(kClothingColours[pick(hash(seed, index, Stream::kClothingColour), kClothingColours.size())]) + " " +
      kGarments[pick(hash(seed, index, Stream::kGarment), kGarments.size())]));

  const char* gender_word = gender == Gender::kWoman ? "woman" : gender == Gender::kMan ? "man" : "androgynous person";
  // "an 18-year-old", "a 34-year-old".
  const std::string age_text = std::to_string(age);
  return (age == 18 || age_text[0] == '8' ? "an " : "a ") + age_text + "-year-old " + gender_word + " " +
         heritage.phrase + " with " + join_and(features) + ", wearing " + join_and(worn) + ", " +
         kExpressions[pick(hash(seed, index, Stream::kExpression), kExpressions.size())];
}

int64_t identity_combination_count() {
  // Per (age, gender, heritage): skins x hair colours x hair styles x eyes x (no facial hair + each
  // kind, men only) x (no glasses + each kind) x clothing colours x garments x expressions. Every
  // choice shows in the text, so combinations and distinct descriptions are the same number:
  // 440,064,967,680 (4.4e11), against 5e9 pairs among 100K identities.
  const auto n = [](const Words& w) { return static_cast<int64_t>(w.size()); };
  const int64_t common = (1 + n(kGlasses)) * n(kClothingColours) * n(kGarments) * n(kExpressions);
  int64_t total = 0;
  for (int64_t age = kMinAge; age <= kMaxAge; ++age)
    for (Gender gender : kGenders)
      for (const Heritage& heritage : heritages()) {
        const Choices c = choices_for(age, gender, heritage);
        total += n(heritage.skins) * n(c.hair_colours) * n(c.hair_styles) * n(*c.eyes) *
                 (c.facial_hair ? 1 + n(*c.facial_hair) : 1) * common;
      }
  return total;
}

std::vector<std::string> read_identity_file(const std::string& path) {
  std::vector<std::string> descriptions;
  std::unordered_map<std::string, int64_t> first_line;
  for (const TextLine& line : read_text_lines(path, "identities file")) {
    if (is_blank(line.text))
      throw GenerateInputError(path, line.number,
                               "the line is blank; every line must hold one identity description (remove it)");
    std::string text = trim_spaces(line.text);
    check_printable_text(path, line.number, text, kMaxDescriptionBytes);
    const auto [it, inserted] = first_line.emplace(text, line.number);
    if (!inserted)
      throw GenerateInputError(
          path, line.number,
          "repeats line " + std::to_string(it->second) + "; every identity needs its own description");
    descriptions.push_back(std::move(text));
  }
  return descriptions;
}

}  // namespace lookahead::trainer::generate
