#include "trainer/generate/text_lines.h"

#include <utf8proc.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <system_error>

#include "trainer/generate/generate_error.h"

namespace lookahead::trainer::generate {
namespace {

std::string code_point_name(int32_t c) {
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "U+%04X", static_cast<unsigned>(c));
  return buffer;
}

// Why a code point is refused, or nullptr when it is printable text.
const char* refusal(int32_t c) {
  if (c == 0xFFFD) return "the replacement character (the text was mis-decoded before it reached this file)";
  switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: return "a control character";
    case UTF8PROC_CATEGORY_CF: return "an invisible format character (zero-width or bidirectional control)";
    case UTF8PROC_CATEGORY_CS: return "a surrogate";
    case UTF8PROC_CATEGORY_CO: return "a private-use character";
    case UTF8PROC_CATEGORY_CN: return "an unassigned code point";
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: return "a line or paragraph separator";
    default: return nullptr;
  }
}

}  // namespace

std::vector<TextLine> read_text_lines(const std::string& path, const std::string& what) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (!fs::exists(status)) throw GenerateInputError(path, -1, "the " + what + " does not exist");
  if (!fs::is_regular_file(status)) throw GenerateInputError(path, -1, "the " + what + " is not a regular file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw GenerateInputError(path, -1, "cannot open the " + what + ": " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw GenerateInputError(path, -1, "cannot read the " + what);
  if (bytes.rfind("\xEF\xBB\xBF", 0) == 0) bytes.erase(0, 3);
  if (bytes.empty()) throw GenerateInputError(path, -1, "the " + what + " is empty");

  std::vector<TextLine> lines;
  size_t begin = 0;
  while (begin < bytes.size()) {
    size_t end = bytes.find('\n', begin);
    const size_t next = end == std::string::npos ? bytes.size() : end + 1;
    if (end == std::string::npos) end = bytes.size();
    if (end > begin && bytes[end - 1] == '\r') --end;
    lines.push_back({static_cast<int64_t>(lines.size()) + 1, bytes.substr(begin, end - begin)});
    begin = next;
  }
  return lines;
}

bool is_blank(const std::string& text) { return text.find_first_not_of(" \t") == std::string::npos; }

std::string trim_spaces(const std::string& text) {
  const size_t first = text.find_first_not_of(' ');
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(' ') - first + 1);
}

void check_printable_text(const std::string& file, int64_t line, const std::string& text, size_t max_bytes) {
  if (text.size() > max_bytes)
    throw GenerateInputError(file, line,
                             "the line is " + std::to_string(text.size()) + " bytes long; at most " +
                                 std::to_string(max_bytes) + " are allowed");
  const auto* data = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto size = static_cast<utf8proc_ssize_t>(text.size());
  int64_t column = 1;  // in characters, as an editor counts them
  for (utf8proc_ssize_t at = 0; at < size; ++column) {
    utf8proc_int32_t c = 0;
    const utf8proc_ssize_t n = utf8proc_iterate(data + at, size - at, &c);
    if (n <= 0)
      throw GenerateInputError(file, line,
                               "the line is not valid UTF-8 (byte " + std::to_string(at + 1) + ", column " +
                                   std::to_string(column) + "); save the file as UTF-8");
    if (const char* why = refusal(c))
      throw GenerateInputError(file, line,
                               "column " + std::to_string(column) + ": " + code_point_name(c) + " is " + why +
                                   "; only letters, marks, digits, punctuation, symbols and spaces are allowed");
    at += n;
  }
}

}  // namespace lookahead::trainer::generate
