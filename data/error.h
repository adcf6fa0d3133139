// DataError: what the data library throws for bad files, bad records and bad arguments, naming the
// file and (when there is one) the record index so that a user can find and fix the record.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace lookahead::data {

/// A data set or record that cannot be used: missing/invalid file, wrong format or version, bad
/// shape, checksum mismatch, undecodable image, index out of range.
class DataError : public std::runtime_error {
 public:
  /// `record` = -1 when the error is not about one record.
  DataError(std::string file, int64_t record, const std::string& message)
      : std::runtime_error(compose(file, record, message)), file_(std::move(file)), record_(record) {}

  const std::string& file() const { return file_; }
  /// Index of the offending record, or -1.
  int64_t record() const { return record_; }

 private:
  static std::string compose(const std::string& file, int64_t record, const std::string& message) {
    std::string s = file.empty() ? std::string("data") : file;
    if (record >= 0) s += ": record " + std::to_string(record);
    return s + ": " + message;
  }
  std::string file_;
  int64_t record_;
};

}  // namespace lookahead::data
