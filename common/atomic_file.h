// Atomic file replacement: a file is written under a temporary name in the target's folder,
// fsynced, renamed over the target and the folder fsynced, so a crash leaves either the old file
// or the complete new one under the target name, never a truncated one.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

namespace lookahead::common {

/// fsync of a file (or, with `directory`, of a folder, which makes renames inside it durable).
/// Throws c10::Error naming the path.
void fsync_path(const std::filesystem::path& path, bool directory);

/// Moves the complete file `tmp` (in the same folder, so rename stays within one file system) to
/// `path` durably: fsync(tmp), rename, fsync of the folder. Throws c10::Error naming the path;
/// for writers whose library writes the temporary file itself (HDF5).
void publish_file(const std::filesystem::path& tmp, const std::filesystem::path& path);

/// Writes `bytes` to `path` through ".<name>.tmp" beside it and publish_file().
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes);

/// A file written through a descriptor under a unique temporary name beside `path`
/// ("<path>.tmp.<pid>.<n>"), which commit() puts in place; destroyed without commit(), the
/// temporary is removed, so a failed write leaves nothing behind.
///
/// Example:
///   AtomicFile out(path, "safetensors file");
///   out.write(header.data(), header.size());
///   out.commit();
class AtomicFile {
 public:
  /// Creates the temporary file; `what` names the kind of file in errors: c10::Error
  /// "cannot create <what> '<path>': <reason>" (also write / sync / close, and rename).
  AtomicFile(std::string path, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends `size` bytes (in pieces: one write() moves at most ~2 GiB on Linux).
  void write(const void* data, size_t size);
  /// fsync, close, rename over `path`, then fsync of the folder. The folder sync is best effort:
  /// after the rename a complete file is in place, so its failure is not an error.
  void commit();

 private:
  std::string path_, what_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace lookahead::common
