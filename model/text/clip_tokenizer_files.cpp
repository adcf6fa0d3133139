// transformers CLIPTokenizer folder writer (see clip_tokenizer_files.h).
#include "model/text/clip_tokenizer_files.h"

#include <c10/util/Exception.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>

namespace lookahead::model::text {
namespace {

void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  TORCH_CHECK(out, "cannot write ", path.string());
  out << text;
  out.close();
  TORCH_CHECK(out, "cannot write ", path.string());
}

}  // namespace

void write_clip_tokenizer_folder(const ClipTokenizer& tokenizer, const std::string& dir,
                                 const ClipTokenizerFolder& folder) {
  const std::filesystem::path d(dir);
  TORCH_CHECK(tokenizer.token_id(folder.pad_token) >= 0, "write_clip_tokenizer_folder: pad token '", folder.pad_token,
              "' is not in the vocabulary");
  // In id order, as transformers' own vocab.json lists the tokens (built as text: an ordered JSON
  // object finds keys by linear search, quadratic over 49408 tokens).
  std::string vocab = "{";
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id) {
    if (id > 0) vocab += ',';
    vocab += nlohmann::json(tokenizer.token(id)).dump() + ":" + std::to_string(id);
  }
  write_text(d / "vocab.json", vocab + "}\n");
  std::string merges = "#version: 0.2\n";
  for (const auto& m : tokenizer.merges()) merges += m + "\n";
  write_text(d / "merges.txt", merges);
  const std::string& bos = tokenizer.token(tokenizer.bos_id());
  const std::string& eos = tokenizer.token(tokenizer.eos_id());
  const nlohmann::ordered_json special{
      {"bos_token", bos}, {"eos_token", eos}, {"pad_token", folder.pad_token}, {"unk_token", eos}};
  write_text(d / "special_tokens_map.json", special.dump(2) + "\n");
  const nlohmann::ordered_json config{{"add_prefix_space", false},
                                      {"bos_token", bos},
                                      {"clean_up_tokenization_spaces", true},
                                      {"do_lower_case", true},
                                      {"eos_token", eos},
                                      {"errors", "replace"},
                                      {"model_max_length", tokenizer.options().max_length},
                                      {"name_or_path", folder.name_or_path},
                                      {"pad_token", folder.pad_token},
                                      {"tokenizer_class", "CLIPTokenizer"},
                                      {"unk_token", eos}};
  write_text(d / "tokenizer_config.json", config.dump(2) + "\n");
}

}  // namespace lookahead::model::text
