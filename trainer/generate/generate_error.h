// GenerateInputError: what `lookahead data generate` throws for bad user input files (identity
// descriptions, prompt templates), naming the file and the line so that a user can find and fix it.
// The CLI turns it into exit status 2.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lookahead::trainer::generate {

/// A user input file that cannot be used: missing or unreadable, empty, a line that is blank, not
/// UTF-8, holds characters outside printable text, is too long, repeats an earlier line, or does
/// not follow the file's format. what() reads "<file>: line <N>: <message>".
class GenerateInputError : public std::runtime_error {
 public:
  /// `line` (1-based) = -1 when the error is not about one line.
  GenerateInputError(std::string file, int64_t line, const std::string& message)
      : std::runtime_error(compose(file, line, message)), file_(std::move(file)), line_(line) {}

  const std::string& file() const { return file_; }
  /// 1-based number of the offending line, or -1.
  int64_t line() const { return line_; }

 private:
  static std::string compose(const std::string& file, int64_t line, const std::string& message) {
    std::string s = file;
    if (line >= 0) s += ": line " + std::to_string(line);
    return s + ": " + message;
  }
  std::string file_;
  int64_t line_;
};

}  // namespace lookahead::trainer::generate
