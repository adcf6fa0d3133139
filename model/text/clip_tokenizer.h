// CLIP byte-level BPE tokenizer, matching transformers' CLIPTokenizer (the tokenizers-backed one
// that SDXL pipelines load from tokenizer/ and tokenizer_2/): NFC, full Unicode lowercasing,
// CLIP's pre-tokenization regex, byte-to-unicode mapping, BPE with `</w>` word ends, BOS/EOS,
// truncation and padding to the model length. Reads open_clip's bpe_simple_vocab_16e6.txt.gz or
// an HF vocab.json + merges.txt pair.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace lookahead::model::text {

/// How encode() frames, truncates and pads a prompt.
struct ClipTokenizerOptions {
  int64_t max_length = 77;  ///< total length including BOS and EOS
  /// Padding id: 49407 (`<|endoftext|>`) for CLIP-L's tokenizer/, 0 (`!`) for SDXL's
  /// tokenizer_2 (OpenCLIP bigG). Like every special token, the pad token's literal text is
  /// matched in the raw prompt first: with tokenizer_2 each `!` becomes id 0 (as in transformers).
  int64_t pad_id = 49407;
  bool pad_to_max_length = true;
};

class ClipTokenizer {
 public:
  /// Loads open_clip's gzip vocabulary (bpe_simple_vocab_16e6.txt.gz, 49408 tokens).
  static ClipTokenizer from_bpe_gz(const std::string& path, ClipTokenizerOptions options = {});
  /// Loads a transformers tokenizer folder's vocab.json and merges.txt.
  static ClipTokenizer from_vocab_merges(const std::string& vocab_json, const std::string& merges_txt,
                                         ClipTokenizerOptions options = {});
  /// Loads a transformers tokenizer folder (vocab.json, merges.txt; pad token and model length
  /// from tokenizer_config.json / special_tokens_map.json when present).
  static ClipTokenizer from_pretrained(const std::string& folder);
  /// A CLIP BPE tokenizer without merges whose vocabulary is the 256 byte-unicode symbols, the
  /// same 256 with `</w>`, then `<|startoftext|>` (512) and `<|endoftext|>` (513): every byte of a
  /// word is one token. For small test models (no files; EOS is the largest id, so the legacy
  /// eos_token_id = 2 pooling rule finds it). options.pad_id is an id of this vocabulary (0 is
  /// `!`, tokenizer_2's convention); the default 49407 (CLIP-L's `<|endoftext|>`) means 513.
  static ClipTokenizer byte_level(ClipTokenizerOptions options = {});

  /// Token ids of `text` without BOS/EOS, truncation or padding.
  std::vector<int64_t> tokenize(const std::string& text) const;
  /// BOS + tokens (truncated to max_length - 2) + EOS, padded with pad_id to max_length.
  std::vector<int64_t> encode(const std::string& text) const;
  /// encode() of every prompt: [B, max_length] int64 (requires pad_to_max_length).
  std::vector<std::vector<int64_t>> encode_batch(const std::vector<std::string>& texts) const;

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  int64_t vocab_size() const { return static_cast<int64_t>(encoder_.size()); }
  const ClipTokenizerOptions& options() const { return options_; }
  ClipTokenizerOptions& options() { return options_; }
  /// Id of a vocabulary token (e.g. "a</w>"); -1 when absent.
  int64_t token_id(const std::string& token) const;
  /// Vocabulary entry of `id`: byte-level stand-ins, `</w>` ending a word. Throws outside the
  /// vocabulary.
  const std::string& token(int64_t id) const;
  /// The text `ids` stand for: stand-ins mapped back to their bytes, each word end as a space,
  /// BOS / EOS dropped, the final space trimmed. A slice of a word's tokens can end inside a
  /// multi-byte character: the result is then not valid UTF-8 (for display, escape it).
  std::string decode(const std::vector<int64_t>& ids) const;
  /// The BPE merges as "left right", in rank order (merges.txt without its header line).
  std::vector<std::string> merges() const;

 private:
  ClipTokenizer() = default;
  void finish_setup();
  void build_decoder();
  /// BPE of one pre-tokenized word already mapped to byte-unicode characters.
  void bpe(const std::string& word, std::vector<int64_t>& out) const;

  ClipTokenizerOptions options_;
  std::unordered_map<std::string, int64_t> encoder_;
  std::vector<std::string> decoder_;  ///< id -> token
  std::unordered_map<std::string, int64_t> merge_ranks_;  ///< "left right" -> rank
  std::string byte_to_unicode_[256];  ///< UTF-8 of the printable stand-in for each byte
  std::unordered_map<std::string, unsigned char> unicode_to_byte_;  ///< the inverse
  int64_t bos_id_ = 49406;
  int64_t eos_id_ = 49407;
};

}  // namespace lookahead::model::text
