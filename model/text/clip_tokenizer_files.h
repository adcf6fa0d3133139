// A transformers CLIPTokenizer folder (vocab.json, merges.txt, tokenizer_config.json,
// special_tokens_map.json) written from a ClipTokenizer: with the tokenizer of open_clip's
// bpe_simple_vocab_16e6.txt.gz these are the files of SDXL's tokenizer/ and tokenizer_2/.
#pragma once

#include <string>

#include "model/text/clip_tokenizer.h"

namespace lookahead::model::text {

/// What differs between SDXL's two tokenizer folders.
struct ClipTokenizerFolder {
  std::string pad_token = "<|endoftext|>";  ///< tokenizer/: "<|endoftext|>"; tokenizer_2/: "!"
  std::string name_or_path = "openai/clip-vit-large-patch14";
};

/// Writes `tokenizer`'s vocabulary (vocab.json: token -> id for every id), its merges in rank order
/// (merges.txt after a "#version: 0.2" line, as transformers skips the first line), and configs
/// naming CLIPTokenizer with model_max_length = options().max_length and the folder's pad token
/// into the existing folder `dir`. Throws c10::Error naming the file that cannot be written, or
/// when the pad token is not in the vocabulary.
void write_clip_tokenizer_folder(const ClipTokenizer& tokenizer, const std::string& dir,
                                 const ClipTokenizerFolder& folder);

}  // namespace lookahead::model::text
