// `lookahead model tokenize`: ids, tokens and the truncation point of prompts under each tokenizer
// given (an SDXL folder's tokenizer/ and tokenizer_2/, transformers tokenizer folders, or
// open_clip's bpe_simple_vocab_16e6.txt.gz). Text for people, or one JSON object per line.
#include "launch/model_tokenize.h"

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <boost/program_options/variables_map.hpp>
#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "launch/cli.h"
#include "model/text/clip_tokenizer.h"

namespace po = boost::program_options;

namespace lookahead::launch {
namespace {

using model::text::ClipTokenizer;

struct NamedTokenizer {
  std::string name;
  ClipTokenizer tokenizer;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

ClipTokenizer load_tokenizer(const std::string& path) {
  namespace fs = std::filesystem;
  TORCH_CHECK(fs::exists(path), "--tokenizer: ", path, " does not exist");
  if (fs::is_directory(path)) {
    TORCH_CHECK(fs::exists(fs::path(path) / "vocab.json") && fs::exists(fs::path(path) / "merges.txt"), "--tokenizer: ",
                path, " has no vocab.json and merges.txt (a transformers CLIP tokenizer folder)");
    return ClipTokenizer::from_pretrained(path);
  }
  TORCH_CHECK(ends_with(path, ".gz"), "--tokenizer: ", path,
              " is neither a tokenizer folder (vocab.json, merges.txt) nor open_clip's bpe_simple_vocab_16e6.txt.gz");
  return ClipTokenizer::from_bpe_gz(path);
}

/// Printable form of a token or text: valid UTF-8 as is, control bytes and stray bytes of a split
/// multi-byte character as \xNN.
std::string printable(const std::string& s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 0x2;
    if (ok && !(len == 1 && (c < 0x20 || c == 0x7F))) {
      out.append(s, i, len);
      i += len;
      continue;
    }
    char hex[8];
    std::snprintf(hex, sizeof(hex), "\\x%02X", c);
    out += hex;
    ++i;
  }
  return out;
}

void print_text(const NamedTokenizer& named, const std::string& prompt) {
  const ClipTokenizer& tok = named.tokenizer;
  const auto& opt = tok.options();
  const std::vector<int64_t> tokens = tok.tokenize(prompt);
  const std::vector<int64_t> ids = tok.encode(prompt);
  const auto room = static_cast<size_t>(opt.max_length - 2);
  std::cout << "\"" << printable(prompt) << "\"\n";
  if (tokens.size() <= room) {
    std::cout << "  " << tokens.size() << " tokens, all kept (room for " << room << ")\n";
  } else {
    const std::vector<int64_t> dropped(tokens.begin() + static_cast<std::ptrdiff_t>(room), tokens.end());
    std::cout << "  " << tokens.size() << " tokens, TRUNCATED to " << room << ": " << dropped.size()
              << " dropped from position " << room + 1 << ": \"" << printable(tok.decode(dropped)) << "\"\n";
  }
  const std::vector<int64_t> kept(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(std::min(tokens.size(), room)));
  std::cout << "  kept text: \"" << printable(tok.decode(kept)) << "\"\n";
  std::cout << "    pos     id  token (vocabulary entry, then the text it stands for)\n";
  size_t end = ids.size();
  while (end > 0 && opt.pad_to_max_length && ids[end - 1] == opt.pad_id && end > std::min(tokens.size(), room) + 2)
    --end;
  for (size_t k = 0; k < end; ++k) {
    const std::string entry = printable(tok.token(ids[k]));
    const std::string text = printable(tok.decode({ids[k]}));
    std::printf("  %5zu  %5lld  %-16s %s\n", k, static_cast<long long>(ids[k]), entry.c_str(),
                text.empty() ? "" : ("\"" + text + "\"").c_str());
  }
  if (end < ids.size()) {
    std::printf("  %zu..%zu  %lld  (padding x%zu)\n", end, ids.size() - 1, static_cast<long long>(opt.pad_id),
                ids.size() - end);
  }
}

nlohmann::json as_json(const NamedTokenizer& named, const std::string& prompt) {
  const ClipTokenizer& tok = named.tokenizer;
  const std::vector<int64_t> tokens = tok.tokenize(prompt);
  const std::vector<int64_t> ids = tok.encode(prompt);
  const auto room = static_cast<size_t>(tok.options().max_length - 2);
  std::vector<std::string> token_text;
  for (const int64_t id : ids) token_text.push_back(tok.token(id));
  nlohmann::json j;
  j["tokenizer"] = named.name;
  j["prompt"] = prompt;
  j["ids"] = ids;
  j["tokens"] = token_text;
  j["n_tokens"] = tokens.size();
  j["kept"] = std::min(tokens.size(), room);
  j["truncated"] = tokens.size() > room;
  j["dropped_text"] = tokens.size() > room
                          ? tok.decode(std::vector<int64_t>(tokens.begin() + static_cast<std::ptrdiff_t>(room), tokens.end()))
                          : std::string();
  return j;
}

}  // namespace

int run_model_tokenize(const std::vector<std::string>& args) {
  po::options_description d("lookahead model tokenize");
  d.add_options()("sdxl-folder", po::value<std::string>()->default_value(""),
                  "diffusers SDXL folder: its tokenizer/ (CLIP-L) and tokenizer_2/ (OpenCLIP bigG)")(
      "tokenizer", po::value<std::vector<std::string>>()->default_value({}, ""),
      "a transformers tokenizer folder (vocab.json, merges.txt) or open_clip's bpe_simple_vocab_16e6.txt.gz; "
      "repeat for several")(
      "prompt", po::value<std::vector<std::string>>()->required(), "text to tokenize; repeat for several")(
      "json", po::bool_switch(), "one JSON object per tokenizer and prompt instead of the table");
  const auto vm = parse(args, d);
  std::vector<NamedTokenizer> tokenizers;
  const std::string sdxl = vm["sdxl-folder"].as<std::string>();
  if (!sdxl.empty()) {
    for (const char* sub : {"tokenizer", "tokenizer_2"}) {
      const std::string path = (std::filesystem::path(sdxl) / sub).string();
      tokenizers.push_back({std::string(sub) + "/", load_tokenizer(path)});
    }
  }
  for (const auto& path : vm["tokenizer"].as<std::vector<std::string>>()) tokenizers.push_back({path, load_tokenizer(path)});
  if (tokenizers.empty()) throw po::error("give --sdxl-folder or at least one --tokenizer");
  const auto prompts = vm["prompt"].as<std::vector<std::string>>();
  const bool json = vm["json"].as<bool>();
  for (const auto& named : tokenizers) {
    if (json) {
      for (const auto& prompt : prompts) {
        std::cout << as_json(named, prompt).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      }
      continue;
    }
    const auto& opt = named.tokenizer.options();
    std::cout << "== " << named.name << " (max_length " << opt.max_length << ", pad " << opt.pad_id << " = '"
              << printable(named.tokenizer.token(opt.pad_id)) << "', vocabulary " << named.tokenizer.vocab_size()
              << ")\n";
    for (const auto& prompt : prompts) print_text(named, prompt);
  }
  return kExitOk;
}

}  // namespace lookahead::launch
