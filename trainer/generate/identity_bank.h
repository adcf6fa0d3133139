// Identities for `lookahead data generate`: a built-in seeded generator of invented people
// (descriptions written for this project, never a real person's name), or a user file of
// descriptions, one a line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lookahead::trainer::generate {

/// The longest description line accepted from a user file, in bytes (the CLIP tokenizers keep 77
/// tokens; 300 bytes of English is already past that once a template is around it).
inline constexpr size_t kMaxDescriptionBytes = 300;

/// Description of identity `index` (>= 0) of the built-in bank under `seed`, e.g. "a 34-year-old
/// woman of West African descent with dark brown skin, short curly black hair and brown eyes,
/// wearing round glasses and a green sweater, smiling". Every attribute is drawn by hashing
/// (seed, index, attribute), so the text depends on nothing else: any rank computes any identity,
/// in any order. Attributes: age (18-79), gender presentation, heritage with the skin tones, hair
/// colours, eye colours and hair styles plausible for it, greys with age, hair length and style,
/// facial hair (men, half of them), glasses (three in ten), clothing colour and garment, expression.
std::string describe_identity(uint64_t seed, int64_t index);

/// Number of distinct descriptions describe_identity can produce (every combination of attribute
/// values it can draw; each reads differently): 440,064,967,680, so that 100K identities rarely
/// repeat one.
int64_t identity_combination_count();

/// The descriptions of a user identities file, one a line, in file order (identity i = line i+1).
/// A CRLF file is fine and leading/trailing spaces are dropped. Throws GenerateInputError naming
/// the file and the line for: a missing or unreadable file, an empty file, a blank line ("line N
/// is blank"), text that check_printable_text refuses, a line over kMaxDescriptionBytes, and a line
/// that repeats an earlier one (both line numbers named).
std::vector<std::string> read_identity_file(const std::string& path);

}  // namespace lookahead::trainer::generate
