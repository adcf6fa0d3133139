// Runs the safetensors fuzz target (model/io/fuzz_safetensors_header.cpp) without libFuzzer, for
// g++ builds and ctest: a seed corpus made in code, then deterministic mutations of it (bit flips,
// truncations, insertions, length-field and digit edits, splices), then any files named on the
// command line (e.g. crash reproducers). --write-corpus DIR writes the seeds for a libFuzzer run.
#include <unistd.h>

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "model/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace lookahead::model::io {
namespace {

namespace fs = std::filesystem;

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string le64(uint64_t v) {
  std::string out(8, '\0');
  std::memcpy(out.data(), &v, 8);
  return out;
}

at::Tensor values(at::ScalarType dtype, at::IntArrayRef shape) {
  at::Tensor base = at::arange(c10::multiply_integers(shape), at::kLong);
  at::Tensor t = dtype == at::kBool ? base.remainder(2).eq(1) : base.sub(2).to(dtype);
  return t.reshape(shape);
}

// Valid files covering every dtype, metadata, empty and rank-0 tensors, escapes, and the loose
// headers older writers produce (odd header lengths, whitespace, unknown fields).
std::vector<std::string> make_seeds() {
  const fs::path dir = fs::temp_directory_path() / ("la_safetensors_seeds_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::string> seeds;
  auto save = [&](const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
    const fs::path p = dir / "seed.safetensors";
    save_file(p.string(), tensors, metadata);
    seeds.push_back(read_bytes(p));
  };
  std::vector<std::pair<std::string, at::Tensor>> every;
  for (auto dtype : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar,
                     at::kByte, at::kBool}) {
    every.emplace_back(dtype_to_string(dtype), values(dtype, {2, 3}));
    save({{"w", values(dtype, {3})}}, {});
  }
  save(every, {{"format", "pt"}});
  save({{"scalar", at::scalar_tensor(1.5)}, {"empty", at::empty({0})}, {"empty_2d", at::empty({3, 0}, at::kHalf)},
        {"one", values(at::kChar, {1})}},
       {{"note", "rank-0 and empty"}, {"k", ""}});
  save({}, {});
  save({}, {{"only", "metadata"}});
  save({{"q\"uote\\ \xc3\xa9\n", values(at::kInt, {2})}, {"", values(at::kByte, {1})}}, {{"\x01", "\t"}});
  fs::remove_all(dir);

  const std::string loose =
      "{\"b\" : {\"dtype\":\"I16\", \"shape\":[2], \"data_offsets\":[8,12], \"x\":[{\"y\":null}, 1.5]},\n"
      " \"__metadata__\": null, \"a\\u00e9\": {\"data_offsets\":[0,8],\"shape\":[],\"dtype\":\"F64\"}}  ";
  seeds.push_back(le64(loose.size()) + loose + std::string(12, '\x07'));
  const std::string bools = R"({"f":{"dtype":"BOOL","shape":[2,2],"data_offsets":[0,4]}})";
  seeds.push_back(le64(bools.size()) + bools + std::string("\x00\x01\x01\x00", 4));
  return seeds;
}

const char* const kTokens[] = {
    "\"dtype\"",  "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F8_E4M3\"", "\"U16\"", "\"BOOL\"", "\"F32\"",
    "-1",         "1.5",       "1e400",            "18446744073709551615", "18446744073709551616", "9223372036854775808",
    "4294967296", "0",         "[]",               "{}",                   "null",                 "true", ",",
    ":",          "\"\\u0000\"", "\"\\ud800\"",    "\"\\\"",               "[0,0]",                "{\"x\":",
};

class Mutator {
 public:
  explicit Mutator(uint64_t seed) : rng_(seed) {}

  std::string mutate(const std::vector<std::string>& seeds) {
    std::string m = seeds[below(seeds.size())];
    for (size_t k = 1 + below(4); k > 0; --k) step(m, seeds);
    return m;
  }

 private:
  size_t below(size_t n) { return n == 0 ? 0 : static_cast<size_t>(rng_() % n); }

  // A position inside the JSON header when there is one, since that is where most structure is.
  size_t header_pos(const std::string& m) {
    if (m.size() > 8 && below(4) != 0) {
      uint64_t n = 0;
      std::memcpy(&n, m.data(), 8);
      return 8 + below(std::min<uint64_t>(n, m.size() - 8) + 1);
    }
    return below(m.size() + 1);
  }

  void step(std::string& m, const std::vector<std::string>& seeds) {
    switch (below(10)) {
      case 0:  // flip a bit
        if (!m.empty()) m[below(m.size())] ^= static_cast<char>(1u << below(8));
        break;
      case 1: {  // overwrite a byte with a JSON-significant one
        static const char kChars[] = "{}[]\":,-.0123456789eE \\u\x00\xff";
        if (!m.empty()) m[std::min(header_pos(m), m.size() - 1)] = kChars[below(sizeof(kChars) - 1)];
        break;
      }
      case 2:  // truncate
        m.resize(below(m.size() + 1));
        break;
      case 3: {  // insert random bytes
        std::string bytes(1 + below(8), '\0');
        for (auto& c : bytes) c = static_cast<char>(rng_());
        m.insert(header_pos(m), bytes);
        break;
      }
      case 4:  // insert a dictionary token
        m.insert(header_pos(m), kTokens[below(std::size(kTokens))]);
        break;
      case 5: {  // delete a range
        size_t at = below(m.size() + 1);
        m.erase(at, below(m.size() - at + 1));
        break;
      }
      case 6: {  // duplicate a range elsewhere
        size_t at = below(m.size() + 1);
        std::string part = m.substr(at, below(m.size() - at + 1));
        m.insert(below(m.size() + 1), part);
        break;
      }
      case 7: {  // edit the length field
        if (m.size() < 8) m.resize(8, '\0');
        uint64_t n = 0;
        std::memcpy(&n, m.data(), 8);
        const uint64_t choices[] = {n + 1, n - 1, n + 8, n - 8, 0, m.size() - 8, m.size(), kMaxHeaderBytes,
                                    kMaxHeaderBytes + 1, ~uint64_t{0}, rng_()};
        n = choices[below(std::size(choices))];
        std::memcpy(m.data(), &n, 8);
        break;
      }
      case 8: {  // change a digit, keeping the JSON well formed but the numbers inconsistent
        std::vector<size_t> digits;
        for (size_t i = 8; i < m.size(); ++i) {
          if (m[i] >= '0' && m[i] <= '9') digits.push_back(i);
        }
        if (!digits.empty()) m[digits[below(digits.size())]] = static_cast<char>('0' + below(10));
        break;
      }
      default: {  // splice with another seed
        const std::string& other = seeds[below(seeds.size())];
        m = m.substr(0, below(m.size() + 1)) + other.substr(below(other.size() + 1));
        break;
      }
    }
  }

  std::mt19937_64 rng_;
};

bool accepted(const std::string& image) {
  try {
    parse_image(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "fuzz");
    return true;
  } catch (const c10::Error&) {
    return false;
  }
}

int run(int argc, char** argv) {
  int64_t iterations = 20000;
  uint64_t seed = 1;
  std::string corpus_out;
  std::vector<std::string> replay;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::stoll(argv[++i]);
    } else if (arg == "--seed" && i + 1 < argc) {
      seed = std::stoull(argv[++i]);
    } else if (arg == "--write-corpus" && i + 1 < argc) {
      corpus_out = argv[++i];
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr,
                   "usage: %s [--iterations N] [--seed S] [--write-corpus DIR] [FILE...]\n"
                   "Runs the safetensors fuzz target on built-in seeds, N mutations of them, and FILEs.\n",
                   argv[0]);
      return 2;
    } else {
      replay.push_back(arg);
    }
  }

  const auto seeds = make_seeds();
  for (size_t i = 0; i < seeds.size(); ++i) {
    if (!accepted(seeds[i])) {
      std::fprintf(stderr, "seed %zu is not a valid file\n", i);
      return 1;
    }
  }
  if (!corpus_out.empty()) {
    fs::create_directories(corpus_out);
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream(fs::path(corpus_out) / ("seed_" + std::to_string(i) + ".safetensors"), std::ios::binary)
          << seeds[i];
    }
    std::printf("wrote %zu seeds to %s\n", seeds.size(), corpus_out.c_str());
    return 0;
  }

  const auto start = std::chrono::steady_clock::now();
  auto feed = [](const std::string& input) {
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
  };
  for (const auto& file : replay) feed(read_bytes(file));
  for (const auto& s : seeds) feed(s);
  Mutator mutator(seed);
  int64_t valid = 0;
  for (int64_t i = 0; i < iterations; ++i) {
    const std::string input = mutator.mutate(seeds);
    valid += accepted(input) ? 1 : 0;
    feed(input);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("safetensors fuzz driver: %zu files, %zu seeds, %lld mutations (%lld still valid) in %.2f s, no findings\n",
              replay.size(), seeds.size(), static_cast<long long>(iterations), static_cast<long long>(valid), seconds);
  return 0;
}

}  // namespace
}  // namespace lookahead::model::io

int main(int argc, char** argv) { return lookahead::model::io::run(argc, argv); }
