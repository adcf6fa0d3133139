// Atomic file replacement (see atomic_file.h).
#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>

namespace lookahead::common {

namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

// fsync of `folder` (the current directory when empty); false when it cannot be opened or synced.
bool sync_folder(const fs::path& folder) {
  const int fd = ::open(folder.empty() ? "." : folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY | O_CLOEXEC) : (O_RDONLY | O_CLOEXEC));
  TORCH_CHECK(fd >= 0, "cannot open '", path.string(), "' to fsync: ", errno_text());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  TORCH_CHECK(rc == 0, "fsync of '", path.string(), "' failed: ", std::strerror(err));
}

void publish_file(const fs::path& tmp, const fs::path& path) {
  fsync_path(tmp, false);
  TORCH_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "cannot rename '", tmp.string(), "' to '", path.string(),
              "': ", errno_text());
  fsync_path(path.parent_path().empty() ? fs::path(".") : path.parent_path(), true);
}

void write_file_atomically(const fs::path& path, std::string_view bytes) {
  // c10::str rather than "." + name: GCC 12 reports a false stringop-overflow for the latter.
  const fs::path tmp = path.parent_path() / c10::str(".", path.filename().string(), ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    TORCH_CHECK(out.good(), "cannot write '", tmp.string(), "'");
  }
  publish_file(tmp, path);
}

AtomicFile::AtomicFile(std::string path, std::string what) : path_(std::move(path)), what_(std::move(what)) {
  // A unique name beside the target, so the rename stays within one file system.
  static std::atomic<uint64_t> counter{0};
  for (int attempt = 0; fd_ < 0; ++attempt) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && (errno != EEXIST || attempt > 100)) {
      const std::string reason = errno_text();
      tmp_.clear();  // nothing was created
      TORCH_CHECK(false, "cannot create ", what_, " '", path_, "': ", reason);
    }
  }
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !tmp_.empty()) ::unlink(tmp_.c_str());
}

void AtomicFile::write(const void* data, size_t size) {
  TORCH_CHECK(fd_ >= 0 && !committed_, "AtomicFile::write after commit of '", path_, "'");
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    // A single write() moves at most ~2 GiB on Linux; ask for 1 GiB at a time.
    const ssize_t n = ::write(fd_, p, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0 && errno == EINTR) continue;
    TORCH_CHECK(n > 0, "cannot write ", what_, " '", path_, "': ", errno_text());
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFile::commit() {
  TORCH_CHECK(fd_ >= 0 && !committed_, "AtomicFile::commit called twice for '", path_, "'");
  TORCH_CHECK(::fsync(fd_) == 0, "cannot sync ", what_, " '", path_, "': ", errno_text());
  const int fd = fd_;
  fd_ = -1;
  TORCH_CHECK(::close(fd) == 0, "cannot close ", what_, " '", path_, "': ", errno_text());
  TORCH_CHECK(::rename(tmp_.c_str(), path_.c_str()) == 0, "cannot rename '", tmp_, "' to '", path_, "': ",
              errno_text());
  committed_ = true;
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  sync_folder(fs::path(path_).parent_path());
}

}  // namespace lookahead::common
