// libFuzzer target for the safetensors reader: each input is a whole file image. The reader must
// reject it with c10::Error or accept it, and then every promise it makes must hold (the tensors
// tile the data section, the mmap reader returns exactly those bytes, and what it returns saves and
// reloads unchanged); a broken promise aborts, so it counts as a finding like a crash does.
//
// g++ builds run this through tests/model/safetensors_fuzz_driver.cpp (ctest model_safetensors_fuzz).
// The real libFuzzer binary (clang 14+, `apt-get install clang`), from the repo root:
//   T=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
//   SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-sanitize=vptr"
//   INC="-I. -isystem $T/include -isystem $T/include/torch/csrc/api/include"
//   SRC="model/io/fuzz_safetensors_header.cpp model/io/safetensors_header.cpp model/io/safetensors.cpp
//        common/mapped_file.cpp common/atomic_file.cpp"
//   LIB="-L$T/lib -Wl,-rpath,$T/lib -ltorch_cpu -lc10"
//   clang++ -std=c++20 -O1 -g $SAN -D_GLIBCXX_USE_CXX11_ABI=1 $INC $SRC $LIB -o build-io/fuzz_safetensors
//   build-io/tests/model/model_safetensors_fuzz_driver --write-corpus build-io/fuzz_corpus
//   build-io/fuzz_safetensors -max_total_time=60 -max_len=4096 build-io/fuzz_corpus
#include <sys/mman.h>
#include <unistd.h>

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include "model/io/safetensors.h"

namespace {

using namespace lookahead::model::io;

void require(bool ok, const char* promise) {
  if (!ok) {
    std::fprintf(stderr, "safetensors fuzz: broken promise: %s\n", promise);
    std::abort();
  }
}

// What parse_image promises about an accepted image of `size` bytes.
void check_layout(const Header& header, size_t size) {
  require(header.data_offset >= 8 && header.data_offset <= size, "the data section starts inside the file");
  uint64_t cursor = 0;
  for (const auto& t : header.tensors) {
    require(t.begin == cursor && t.end >= t.begin, "tensors tile the data section in offset order");
    const int64_t numel = t.numel();
    require(numel >= 0, "numel is not negative");
    require(t.end - t.begin == static_cast<uint64_t>(numel) * c10::elementSize(t.dtype), "byte counts match shapes");
    cursor = t.end;
  }
  require(cursor == size - header.data_offset, "tensors cover the data section");
}

// A memory file holding the image, opened by path so that the real mmap reader runs on it.
struct MemFile {
  int fd = -1;
  MemFile(const uint8_t* data, size_t size) {
    fd = ::memfd_create("safetensors-fuzz", MFD_CLOEXEC);
    require(fd >= 0, "memfd_create works");
    for (size_t done = 0; done < size;) {
      ssize_t n = ::write(fd, data + done, size - done);
      require(n > 0, "writing the memory file works");
      done += static_cast<size_t>(n);
    }
  }
  ~MemFile() { ::close(fd); }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd); }
};

// Where the write-back check saves; tmpfs when there is one, so that fsync is cheap.
std::string scratch_path() {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path dir = fs::is_directory("/dev/shm", ec) && ::access("/dev/shm", W_OK) == 0 ? fs::path("/dev/shm")
                                                                                   : fs::temp_directory_path();
  return (dir / ("la_safetensors_fuzz_" + std::to_string(::getpid()) + ".safetensors")).string();
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  // memcmp must not see the null data pointer of an empty tensor, even for zero bytes.
  return a.scalar_type() == b.scalar_type() && a.sizes() == b.sizes() &&
         (a.nbytes() == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0);
}

void check_reader(const uint8_t* data, size_t size, const Header& header) {
  MemFile mem(data, size);
  std::shared_ptr<SafetensorsFile> file;
  try {
    file = SafetensorsFile::open(mem.path());
  } catch (const c10::Error&) {
    require(false, "the mmap reader accepts what parse_image accepts");
  }
  require(file->tensors().size() == header.tensors.size() && file->metadata() == header.metadata,
          "the mmap reader sees the same header");
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  bool all_read = true;
  for (const auto& t : header.tensors) {
    at::Tensor x;
    try {
      x = file->get(t.name);
    } catch (const c10::Error&) {
      require(t.dtype == at::kBool, "only BOOL data with bytes other than 0/1 is refused after validation");
      all_read = false;
      continue;
    }
    require(x.is_cpu() && x.is_contiguous() && x.scalar_type() == t.dtype && x.sizes() == c10::IntArrayRef(t.shape),
            "get() returns a contiguous CPU tensor of the header's dtype and shape");
    require(reinterpret_cast<uintptr_t>(x.data_ptr()) % x.element_size() == 0, "get() returns aligned data");
    require(t.end == t.begin || std::memcmp(x.data_ptr(), data + header.data_offset + t.begin, t.end - t.begin) == 0,
            "get() returns the file's bytes");
    tensors.emplace_back(t.name, x);
  }
  if (!all_read) return;

  // Write back what was read: the writer must accept it and the reader must see the same content.
  const std::string out = scratch_path();
  try {
    save_file(out, tensors, header.metadata);
    auto again = SafetensorsFile::open(out);
    require(again->metadata() == header.metadata && again->tensors().size() == tensors.size(),
            "a saved file keeps its metadata and tensors");
    for (const auto& [name, x] : tensors) require(same_bytes(again->get(name), x), "a saved file keeps its data");
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    require(false, "whatever the reader accepts, the writer saves and the reader reloads");
  }
  ::unlink(out.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Header header;
  try {
    header = parse_image(data, size, "fuzz-input.safetensors");
  } catch (const c10::Error&) {
    return 0;  // a clean rejection is the expected outcome for most inputs
  }
  check_layout(header, size);
  check_reader(data, size, header);
  return 0;
}
