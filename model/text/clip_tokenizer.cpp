// CLIP BPE tokenizer. Pipeline (transformers' CLIPTokenizer, i.e. the tokenizers library): literal
// special tokens are split out first; the rest is NFC-normalized and lowercased (Unicode tables from
// utf8proc, never the C library's locale), split by CLIP's regex
// (`'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+`), each piece's UTF-8 bytes mapped to
// printable stand-ins, then merged by BPE rank with `</w>` marking the word end.
#include "model/text/clip_tokenizer.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

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

/// Decodes UTF-8. A byte that does not start a well-formed sequence (bad continuation, overlong
/// form, surrogate, beyond U+10FFFF) becomes U+FFFD, so the normalizer only sees valid text.
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
    static constexpr uint32_t kMinimum[] = {0, 0, 0x80, 0x800, 0x10000};
    ok = ok && cp >= kMinimum[len] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
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

std::string encode_utf8(const std::vector<uint32_t>& cps, size_t begin, size_t end) {
  std::string s;
  s.reserve(end - begin);
  for (size_t k = begin; k < end; ++k) append_utf8(s, cps[k]);
  return s;
}

/// Regex `\s` as Oniguruma (the tokenizers library's engine) defines it for Unicode: \t..\r,
/// NEL, and the Zs / Zl / Zp separators, i.e. the White_Space property.
bool is_space(uint32_t c) {
  if (c <= 0x20) return c == 0x20 || (c >= 0x09 && c <= 0x0D);
  if (c == 0x85) return true;
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category == UTF8PROC_CATEGORY_ZS || category == UTF8PROC_CATEGORY_ZL || category == UTF8PROC_CATEGORY_ZP;
}

/// `\p{L}`: Lu, Ll, Lt, Lm, Lo.
bool is_letter(uint32_t c) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_LU && category <= UTF8PROC_CATEGORY_LO;
}

/// `\p{N}`: Nd, Nl, No (digits of every script, Roman numerals, fractions, circled numbers...).
bool is_number(uint32_t c) {
  const auto category = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return category >= UTF8PROC_CATEGORY_ND && category <= UTF8PROC_CATEGORY_NO;
}

/// Combining marks that the reference's NFC (the tokenizers library's normalization tables) treats
/// as starters with combining class 0, although Unicode gives them a non-zero class: marks added
/// in recent Unicode versions. Found by probing the reference with every mark (a class-240 mark
/// before it, a class-1 mark after it) against utf8proc; tests/parity/clip_oracle.py repeats the
/// probe each run, so a change on either side fails the parity test rather than drifting.
constexpr uint32_t kReferenceStarterMarks[][2] = {
    {0x7FD, 0x7FD}, {0x898, 0x89F}, {0x8CA, 0x8D3}, {0x9FE, 0x9FE}, {0xC3C, 0xC3C}, {0xD3B, 0xD3C}, {0xEBA, 0xEBA},
    {0x1715, 0x1715}, {0x1ABF, 0x1ACE}, {0x1DF6, 0x1DFA}, {0xA82C, 0xA82C}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC},
    {0x10EFD, 0x10EFF}, {0x10F46, 0x10F50}, {0x10F82, 0x10F85}, {0x11070, 0x11070}, {0x1133B, 0x1133B},
    {0x1145E, 0x1145E}, {0x11839, 0x1183A}, {0x1193D, 0x1193E}, {0x11943, 0x11943}, {0x119E0, 0x119E0},
    {0x11A34, 0x11A34}, {0x11A47, 0x11A47}, {0x11A99, 0x11A99}, {0x11D42, 0x11D42}, {0x11D44, 0x11D45},
    {0x11D97, 0x11D97}, {0x11F41, 0x11F42}, {0x16FF0, 0x16FF1}, {0x1E08F, 0x1E08F}, {0x1E130, 0x1E136},
    {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E4EC, 0x1E4EF}};

bool is_reference_starter_mark(uint32_t c) {
  for (const auto& r : kReferenceStarterMarks) {
    if (c >= r[0] && c <= r[1]) return true;
  }
  return false;
}

/// NFC of a run of code points (utf8proc; its tables are Unicode's).
void append_nfc(const std::vector<uint32_t>& cps, size_t begin, size_t end, std::vector<uint32_t>& out) {
  if (begin == end) return;
  const std::string valid = encode_utf8(cps, begin, end);
  utf8proc_uint8_t* composed = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(valid.data()), static_cast<utf8proc_ssize_t>(valid.size()),
                   &composed, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  TORCH_CHECK(n >= 0, "clip tokenizer: Unicode normalization failed: ", utf8proc_errmsg(n));
  const std::string nfc(reinterpret_cast<const char*>(composed), static_cast<size_t>(n));
  std::free(composed);
  const std::vector<uint32_t> decoded = decode_utf8(nfc);
  out.insert(out.end(), decoded.begin(), decoded.end());
}

/// The reference normalizer, in its order: NFC, then (whitespace runs need no collapsing: the
/// split drops them) per-character full lowercase mapping. NFC runs between the marks the
/// reference takes for starters: a starter neither reorders nor composes with what surrounds it,
/// so normalizing the runs between them separately is exactly the reference's NFC. Full, not
/// simple, lowercase: U+0130 (Turkish dotted capital I) lowers to "i" + U+0307, the only
/// unconditional multi-character lowercase mapping in SpecialCasing.txt; the conditional ones
/// (final sigma, Lithuanian, Turkish locale) do not apply to a per-character mapping, as in the
/// reference.
std::vector<uint32_t> normalize(const std::string& text) {
  const std::vector<uint32_t> cps = decode_utf8(text);
  std::vector<uint32_t> nfc;
  nfc.reserve(cps.size());
  size_t run = 0;
  for (size_t k = 0; k < cps.size(); ++k) {
    if (!is_reference_starter_mark(cps[k])) continue;
    append_nfc(cps, run, k, nfc);
    nfc.push_back(cps[k]);
    run = k + 1;
  }
  append_nfc(cps, run, cps.size(), nfc);
  std::vector<uint32_t> out;
  out.reserve(nfc.size());
  for (const uint32_t c : nfc) {
    if (c == 0x130) {
      out.push_back('i');
      out.push_back(0x307);
    } else {
      out.push_back(static_cast<uint32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
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
  std::vector<std::string> pieces;
  auto piece_of = [&](size_t begin, size_t end) { return encode_utf8(cps, begin, end); };
  size_t i = 0;
  while (i < cps.size()) {
    const uint32_t c = cps[i];
    if (is_space(c)) {
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
    if (is_letter(c)) {
      while (j < cps.size() && is_letter(cps[j])) ++j;
    } else if (!is_number(c)) {
      while (j < cps.size() && !is_space(cps[j]) && !is_letter(cps[j]) && !is_number(cps[j])) ++j;
    }
    pieces.push_back(piece_of(i, j));
    i = j;
  }
  return pieces;
}

}  // namespace

std::vector<std::string> ClipTokenizer::merges() const {
  std::vector<std::string> out(merge_ranks_.size());
  for (const auto& [pair, rank] : merge_ranks_) out.at(static_cast<size_t>(rank)) = pair;
  return out;
}

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
    unicode_to_byte_.emplace(s, static_cast<unsigned char>(byte));
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

const std::string& ClipTokenizer::token(int64_t id) const {
  TORCH_CHECK(id >= 0 && static_cast<size_t>(id) < decoder_.size() && !decoder_[static_cast<size_t>(id)].empty(),
              "clip tokenizer: id ", id, " is not in the vocabulary (", encoder_.size(), " tokens)");
  return decoder_[static_cast<size_t>(id)];
}

std::string ClipTokenizer::decode(const std::vector<int64_t>& ids) const {
  static const std::string kWordEnd = "</w>";
  std::string text;
  for (const int64_t id : ids) {
    if (id == bos_id_ || id == eos_id_) continue;
    std::string piece = token(id);
    const bool word_end = piece.size() >= kWordEnd.size() &&
                          piece.compare(piece.size() - kWordEnd.size(), kWordEnd.size(), kWordEnd) == 0;
    if (word_end) piece.resize(piece.size() - kWordEnd.size());
    const std::vector<uint32_t> stand_ins = decode_utf8(piece);
    for (const uint32_t c : stand_ins) {
      std::string one;
      append_utf8(one, c);
      const auto it = unicode_to_byte_.find(one);
      if (it != unicode_to_byte_.end()) {
        text += static_cast<char>(it->second);
      } else {
        text += one;  // a literal special token (e.g. tokenizer_2's pad "!" is a stand-in itself)
      }
    }
    if (word_end) text += ' ';
  }
  if (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
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
    for (const auto& piece : pre_tokenize(normalize(segment))) bpe(piece, ids);
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
