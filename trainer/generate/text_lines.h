// The line-oriented user files of `lookahead data generate` (identity descriptions, prompt
// templates): reading them as numbered lines and the one rule for what a line may contain.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::trainer::generate {

/// One line of a user file: its 1-based number and its text without the line ending.
struct TextLine {
  int64_t number = 0;
  std::string text;
};

/// Reads `path` as lines ending in LF or CRLF (a final line may lack its ending; a UTF-8 byte-order
/// mark at the very start is skipped). `what` names the file's role in errors ("identities file").
/// Throws GenerateInputError when the file is missing, not a regular file, unreadable or empty.
std::vector<TextLine> read_text_lines(const std::string& path, const std::string& what);

/// True for a line of only spaces and tabs (or nothing).
bool is_blank(const std::string& text);

/// `text` without leading and trailing ASCII spaces.
std::string trim_spaces(const std::string& text);

/// Checks that `text` (line `line` of `file`) is valid UTF-8 of at most `max_bytes` bytes whose
/// characters are letters, marks, digits, punctuation, symbols or space separators (Unicode
/// categories L*, M*, N*, P*, S*, Zs). Refused, with the code point and its column: controls (Cc,
/// tabs included), format characters (Cf: zero-width joiners, bidi overrides, byte-order marks),
/// private-use (Co), surrogates (Cs), unassigned code points (Cn), line/paragraph separators (Zl,
/// Zp) and U+FFFD, the replacement character that marks text already mis-decoded. Prompts built
/// from such text look the same to a reader but tokenize differently, so they are never accepted
/// silently. Throws GenerateInputError(file, line, ...).
void check_printable_text(const std::string& file, int64_t line, const std::string& text, size_t max_bytes);

}  // namespace lookahead::trainer::generate
