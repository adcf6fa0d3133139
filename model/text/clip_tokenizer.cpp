// CLIP BPE tokenizer. Pipeline (transformers' CLIPTokenizer): literal special tokens are split
// out first; the rest is whitespace-collapsed and lowercased, split by CLIP's regex
// (`'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`), each piece's UTF-8 bytes mapped to
// printable stand-ins, then merged by BPE rank with `</w>` marking the word end.
#include "model/text/clip_tokenizer.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <algorithm>
#include <clocale>
#include <cwctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <locale.h>
#include <sstream>
#include <wctype.h>

namespace lookahead::model::text {
namespace {

constexpr const char* kBos = "<|startoftext|>";
constexpr const char* kEos = "<|endoftext|>";

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  TORCH_CHECK(in, "clip tokenizer: cannot open ", path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string read_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  TORCH_CHECK(file != nullptr, "clip tokenizer: cannot open ", path);
  std::string out;
  char chunk[1 << 16];
  int n = 0;
  while ((n = gzread(file, chunk, sizeof(chunk))) > 0) out.append(chunk, static_cast<size_t>(n));
  const bool failed = n < 0;
  gzclose(file);
  TORCH_CHECK(!failed, "clip tokenizer: corrupt gzip file ", path);
  return out;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// Decodes UTF-8; an invalid byte becomes U+FFFD (as Python's errors="replace" would).
std::vector<uint32_t> decode_utf8(const std::string& s) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + static_cast<size_t>(len) > s.size()) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    bool ok = true;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<size_t>(k)]);
      if ((cc >> 6) != 0x2) ok = false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if (!ok) {
      out.push_back(0xFFFD);
      ++i;
      continue;
    }
    out.push_back(cp);
    i += static_cast<size_t>(len);
  }
  return out;
}

/// Unicode-aware character classes (glibc's UTF-8 locale tables).
class CharClasses {
 public:
  CharClasses() {
    for (const char* name : {"C.UTF-8", "C.utf8", "en_US.UTF-8"}) {
      locale_ = newlocale(LC_CTYPE_MASK, name, static_cast<locale_t>(nullptr));
      if (locale_ != static_cast<locale_t>(nullptr)) break;
    }
  }
  ~CharClasses() {
    if (locale_ != static_cast<locale_t>(nullptr)) freelocale(locale_);
  }
  CharClasses(const CharClasses&) = delete;
  CharClasses& operator=(const CharClasses&) = delete;

  /// Regex `\s` (Unicode White_Space).
  static bool is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
  }
  /// `\p{N}`: decimal digits, letter numbers and other numbers of the common scripts.
  bool is_number(uint32_t c) const {
    if (c < 0x80) return c >= '0' && c <= '9';
    static constexpr uint32_t kRanges[][2] = {
        {0xB2, 0xB3},     {0xB9, 0xB9},     {0xBC, 0xBE},     {0x660, 0x669},   {0x6F0, 0x6F9},
        {0x7C0, 0x7C9},   {0x966, 0x96F},   {0x9E6, 0x9EF},   {0xA66, 0xA6F},   {0xAE6, 0xAEF},
        {0xB66, 0xB6F},   {0xBE6, 0xBF2},   {0xC66, 0xC6F},   {0xCE6, 0xCEF},   {0xD66, 0xD78},
        {0xE50, 0xE59},   {0xED0, 0xED9},   {0xF20, 0xF33},   {0x1040, 0x1049}, {0x1369, 0x137C},
        {0x16EE, 0x16F0}, {0x17E0, 0x17E9}, {0x1810, 0x1819}, {0x2070, 0x2070}, {0x2074, 0x2079},
        {0x2080, 0x2089}, {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249B}, {0x24EA, 0x24FF},
        {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0x3038, 0x303A}, {0x3192, 0x3195},
        {0x3220, 0x3229}, {0x3248, 0x324F}, {0x3251, 0x325F}, {0x3280, 0x3289}, {0x32B1, 0x32BF},
        {0xFF10, 0xFF19}, {0x1D7CE, 0x1D7FF}, {0x1F100, 0x1F10C}};
    for (const auto& r : kRanges) {
      if (c >= r[0] && c <= r[1]) return true;
    }
    return false;
  }
  /// `\p{L}`.
  bool is_letter(uint32_t c) const {
    if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (c == 0xAA || c == 0xBA) return true;  // ª º are Lo
    if (locale_ == static_cast<locale_t>(nullptr) || is_number(c)) return false;
    return iswalpha_l(static_cast<wint_t>(c), locale_) != 0;
  }
  uint32_t lower(uint32_t c) const {
    if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (locale_ == static_cast<locale_t>(nullptr)) return c;
    return static_cast<uint32_t>(towlower_l(static_cast<wint_t>(c), locale_));
  }

 private:
  locale_t locale_ = static_cast<locale_t>(nullptr);
};

const CharClasses& classes() {
  static const CharClasses instance;
  return instance;
}

/// GPT-2's byte -> printable code point table, in the order the vocabulary lists it.
std::vector<std::pair<int, uint32_t>> bytes_to_unicode() {
  std::vector<std::pair<int, uint32_t>> table;
  std::vector<bool> taken(256, false);
  auto add_range = [&](int lo, int hi) {
    for (int b = lo; b <= hi; ++b) {
      table.emplace_back(b, static_cast<uint32_t>(b));
      taken[static_cast<size_t>(b)] = true;
    }
  };
  add_range('!', '~');
  add_range(0xA1, 0xAC);
  add_range(0xAE, 0xFF);
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) {
    if (!taken[static_cast<size_t>(b)]) table.emplace_back(b, 256 + n++);
  }
  return table;
}

bool starts_with_at(const std::vector<uint32_t>& cps, size_t pos, const char* ascii) {
  for (size_t k = 0; ascii[k] != '\0'; ++k) {
    if (pos + k >= cps.size() || cps[pos + k] != static_cast<unsigned char>(ascii[k])) return false;
  }
  return true;
}

/// CLIP's pre-tokenization of normalized text, followed by the byte-level pre-tokenizer's GPT-2
/// split (which only changes the special-token literals: `<|`, word, `|>`).
std::vector<std::string> pre_tokenize(const std::vector<uint32_t>& cps) {
  const CharClasses& cc = classes();
  std::vector<std::string> pieces;
  auto piece_of = [&](size_t begin, size_t end) {
    std::string s;
    for (size_t k = begin; k < end; ++k) append_utf8(s, cps[k]);
    return s;
  };
  size_t i = 0;
  while (i < cps.size()) {
    const uint32_t c = cps[i];
    if (CharClasses::is_space(c)) {
      ++i;
      continue;
    }
    bool special = false;
    for (const char* literal : {kBos, kEos}) {
      if (starts_with_at(cps, i, literal)) {
        const size_t len = std::char_traits<char>::length(literal);
        pieces.push_back("<|");
        pieces.push_back(piece_of(i + 2, i + len - 2));
        pieces.push_back("|>");
        i += len;
        special = true;
        break;
      }
    }
    if (special) continue;
    if (c == '\'') {
      size_t len = 0;
      for (const char* suffix : {"s", "t", "re", "ve", "m", "ll", "d"}) {
        if (starts_with_at(cps, i + 1, suffix)) {
          len = 1 + std::char_traits<char>::length(suffix);
          break;
        }
      }
      if (len > 0) {
        pieces.push_back(piece_of(i, i + len));
        i += len;
        continue;
      }
    }
    size_t j = i + 1;
    if (cc.is_letter(c)) {
      while (j < cps.size() && cc.is_letter(cps[j])) ++j;
    } else if (!cc.is_number(c)) {
      while (j < cps.size() && !CharClasses::is_space(cps[j]) && !cc.is_letter(cps[j]) && !cc.is_number(cps[j])) ++j;
    }
    pieces.push_back(piece_of(i, j));
    i = j;
  }
  return pieces;
}

}  // namespace

ClipTokenizer ClipTokenizer::from_bpe_gz(const std::string& path, ClipTokenizerOptions options) {
  const std::string text = read_gzip(path);
  std::vector<std::string> lines;
  std::stringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  // open_clip: merges = lines[1 : 49152 - 256 - 2 + 1].
  constexpr size_t kMerges = 49152 - 256 - 2;
  TORCH_CHECK(lines.size() >= kMerges + 1, "clip tokenizer: ", path, " has ", lines.size(), " lines, expected > ",
              kMerges);
  ClipTokenizer tok;
  tok.options_ = options;
  tok.finish_setup();
  std::vector<std::string> vocab;
  for (const auto& [byte, cp] : bytes_to_unicode()) vocab.push_back(tok.byte_to_unicode_[byte]);
  const size_t n_bytes = vocab.size();
  for (size_t k = 0; k < n_bytes; ++k) vocab.push_back(vocab[k] + "</w>");
  for (size_t m = 0; m < kMerges; ++m) {
    const std::string& line = lines[m + 1];
    const size_t space = line.find(' ');
    TORCH_CHECK(space != std::string::npos, "clip tokenizer: bad merge line ", m + 2, " in ", path);
    const std::string left = line.substr(0, space), right = line.substr(space + 1);
    tok.merge_ranks_.emplace(left + " " + right, static_cast<int64_t>(m));
    vocab.push_back(left + right);
  }
  vocab.push_back(kBos);
  vocab.push_back(kEos);
  for (size_t k = 0; k < vocab.size(); ++k) tok.encoder_.emplace(vocab[k], static_cast<int64_t>(k));
  tok.build_decoder();
  tok.bos_id_ = tok.token_id(kBos);
  tok.eos_id_ = tok.token_id(kEos);
  return tok;
}

ClipTokenizer ClipTokenizer::from_vocab_merges(const std::string& vocab_json, const std::string& merges_txt,
                                               ClipTokenizerOptions options) {
  ClipTokenizer tok;
  tok.options_ = options;
  tok.finish_setup();
  const auto vocab = nlohmann::json::parse(read_text(vocab_json));
  for (const auto& [token, id] : vocab.items()) tok.encoder_.emplace(token, id.get<int64_t>());
  std::stringstream stream(read_text(merges_txt));
  int64_t rank = 0;
  for (std::string line; std::getline(stream, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    TORCH_CHECK(line.find(' ') != std::string::npos, "clip tokenizer: bad merge line '", line, "' in ", merges_txt);
    tok.merge_ranks_.emplace(line, rank++);
  }
  tok.build_decoder();
  tok.bos_id_ = tok.token_id(kBos);
  tok.eos_id_ = tok.token_id(kEos);
  TORCH_CHECK(tok.bos_id_ >= 0 && tok.eos_id_ >= 0, "clip tokenizer: ", vocab_json, " lacks ", kBos, " or ", kEos);
  return tok;
}

ClipTokenizer ClipTokenizer::from_pretrained(const std::string& folder) {
  namespace fs = std::filesystem;
  const fs::path dir(folder);
  ClipTokenizer tok = from_vocab_merges((dir / "vocab.json").string(), (dir / "merges.txt").string());
  for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"}) {
    const fs::path path = dir / name;
    if (!fs::exists(path)) continue;
    const auto config = nlohmann::json::parse(read_text(path.string()));
    if (config.contains("pad_token") && !config["pad_token"].is_null()) {
      const auto& pad = config["pad_token"];
      const std::string content = pad.is_string() ? pad.get<std::string>() : pad.value("content", std::string());
      const int64_t id = tok.token_id(content);
      TORCH_CHECK(id >= 0, "clip tokenizer: pad token '", content, "' of ", path.string(), " is not in the vocabulary");
      tok.options_.pad_id = id;
    }
    if (config.contains("model_max_length") && config["model_max_length"].is_number_integer()) {
      const auto length = config["model_max_length"].get<int64_t>();
      if (length > 0 && length < 100000) tok.options_.max_length = length;
    }
  }
  return tok;
}

ClipTokenizer ClipTokenizer::byte_level(ClipTokenizerOptions options) {
  ClipTokenizer tok;
  tok.options_ = options;
  tok.finish_setup();
  std::vector<std::string> vocab;
  for (const auto& entry : bytes_to_unicode()) vocab.push_back(tok.byte_to_unicode_[entry.first]);
  const size_t n_bytes = vocab.size();
  for (size_t k = 0; k < n_bytes; ++k) vocab.push_back(vocab[k] + "</w>");
  vocab.push_back(kBos);
  vocab.push_back(kEos);
  for (size_t k = 0; k < vocab.size(); ++k) tok.encoder_.emplace(vocab[k], static_cast<int64_t>(k));
  tok.build_decoder();
  tok.bos_id_ = tok.token_id(kBos);
  tok.eos_id_ = tok.token_id(kEos);
  if (tok.options_.pad_id == ClipTokenizerOptions{}.pad_id) tok.options_.pad_id = tok.eos_id_;
  TORCH_CHECK(tok.options_.pad_id >= 0 && tok.options_.pad_id < tok.vocab_size(), "clip tokenizer: byte_level pad_id ",
              options.pad_id, " is outside the vocabulary [0, ", tok.vocab_size(), ")");
  return tok;
}

void ClipTokenizer::finish_setup() {
  for (const auto& [byte, cp] : bytes_to_unicode()) {
    std::string s;
    append_utf8(s, cp);
    byte_to_unicode_[byte] = s;
  }
}

void ClipTokenizer::build_decoder() {
  decoder_.clear();
  for (const auto& [token, id] : encoder_) {
    TORCH_CHECK(id >= 0 && id < (int64_t{1} << 24), "clip tokenizer: token id ", id, " out of range");
    if (static_cast<size_t>(id) >= decoder_.size()) decoder_.resize(static_cast<size_t>(id) + 1);
    decoder_[static_cast<size_t>(id)] = token;
  }
}

int64_t ClipTokenizer::token_id(const std::string& token) const {
  const auto it = encoder_.find(token);
  return it == encoder_.end() ? -1 : it->second;
}

void ClipTokenizer::bpe(const std::string& word, std::vector<int64_t>& out) const {
  // Symbols: one byte stand-in each, `</w>` on the last.
  std::vector<std::string> symbols;
  for (unsigned char byte : word) symbols.push_back(byte_to_unicode_[byte]);
  if (symbols.empty()) return;
  symbols.back() += "</w>";
  while (symbols.size() > 1) {
    int64_t best = std::numeric_limits<int64_t>::max();
    size_t best_at = 0;
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      const auto it = merge_ranks_.find(symbols[k] + " " + symbols[k + 1]);
      if (it != merge_ranks_.end() && it->second < best) {
        best = it->second;
        best_at = k;
      }
    }
    if (best == std::numeric_limits<int64_t>::max()) break;
    const std::string left = symbols[best_at], right = symbols[best_at + 1];
    std::vector<std::string> merged;
    merged.reserve(symbols.size());
    for (size_t k = 0; k < symbols.size();) {
      if (k + 1 < symbols.size() && symbols[k] == left && symbols[k + 1] == right) {
        merged.push_back(left + right);
        k += 2;
      } else {
        merged.push_back(symbols[k]);
        ++k;
      }
    }
    symbols.swap(merged);
  }
  const int64_t unk = eos_id_;  // CLIP's unk token is <|endoftext|>
  for (const auto& symbol : symbols) {
    const int64_t id = token_id(symbol);
    out.push_back(id >= 0 ? id : unk);
  }
}

std::vector<int64_t> ClipTokenizer::tokenize(const std::string& text) const {
  const CharClasses& cc = classes();
  // Literal special tokens (BOS, EOS and the pad token) are matched in the raw text, before
  // normalization.
  std::vector<std::string> specials{kBos, kEos};
  const auto pad = static_cast<size_t>(options_.pad_id);
  if (options_.pad_id >= 0 && pad < decoder_.size() && !decoder_[pad].empty() && decoder_[pad] != kBos &&
      decoder_[pad] != kEos) {
    specials.push_back(decoder_[pad]);
  }
  std::vector<int64_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = std::string::npos;
    const std::string* found = nullptr;
    for (const auto& literal : specials) {
      const size_t at = text.find(literal, pos);
      if (at != std::string::npos && (next == std::string::npos || at < next ||
                                      (at == next && literal.size() > found->size()))) {
        next = at;
        found = &literal;
      }
    }
    const std::string segment = text.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    // Normalize: lowercase (whitespace runs need no collapsing: the split drops them).
    std::vector<uint32_t> cps = decode_utf8(segment);
    for (auto& c : cps) c = cc.lower(c);
    for (const auto& piece : pre_tokenize(cps)) bpe(piece, ids);
    if (found == nullptr) break;
    ids.push_back(token_id(*found));
    pos = next + found->size();
  }
  return ids;
}

std::vector<int64_t> ClipTokenizer::encode(const std::string& text) const {
  TORCH_CHECK(options_.max_length >= 2, "clip tokenizer: max_length must be at least 2");
  std::vector<int64_t> tokens = tokenize(text);
  const auto budget = static_cast<size_t>(options_.max_length - 2);
  if (tokens.size() > budget) tokens.resize(budget);
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(options_.max_length));
  ids.push_back(bos_id_);
  ids.insert(ids.end(), tokens.begin(), tokens.end());
  ids.push_back(eos_id_);
  if (options_.pad_to_max_length) ids.resize(static_cast<size_t>(options_.max_length), options_.pad_id);
  return ids;
}

std::vector<std::vector<int64_t>> ClipTokenizer::encode_batch(const std::vector<std::string>& texts) const {
  std::vector<std::vector<int64_t>> out;
  out.reserve(texts.size());
  for (const auto& text : texts) out.push_back(encode(text));
  return out;
}

}  // namespace lookahead::model::text
