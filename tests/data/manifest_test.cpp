// Sharded training sets (data/manifest.h): the manifest's own round trip and errors, and a
// manifest of 3 shards (one empty) reading exactly as one file holding the same records (every
// field, optional tensors, columns, attributes, globals), through TrainingSet, the pairing and
// the Loader; shards that disagree with the manifest or with each other; a corrupt record in a
// shard named by that shard's file and index.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/image_io.h"
#include "data/loader.h"
#include "data/manifest.h"
#include "data/pairing.h"
#include "data/tools.h"
#include "tests/data/data_test_util.h"

namespace lookahead::data {
namespace {

using test::ScratchDir;
using json = nlohmann::json;

constexpr int64_t kRecords = 12;  // 4 identities x 3
constexpr int64_t kSplit = 5;     // shard 0 = [0, 5), shard 1 empty, shard 2 = [5, 12)

// Record i of the set: identity i / 3; per identity two vanilla photos and one stylised image
// (the generated sets' layout), optional tensors drawn from a fixed seed.
RecordData make_record(int64_t i) {
  const int64_t id = i / 3;
  const bool photo = i % 3 != 2;
  SynthFace face = draw_synthetic_face(id, i % 3, 16, 5, photo);
  RecordData r;
  r.image = encode_png(face.image);
  r.identity = 100 + id;
  r.prompt = "portr\xC3\xA4t " + std::to_string(i);
  r.photo = photo;
  r.landmarks = face.landmarks;
  at::manual_seed(static_cast<uint64_t>(i));
  r.latents = at::randn({4, 2, 2}).to(at::kHalf);
  r.prompt_embeds = at::randn({3, 8});
  r.pooled_prompt_embeds = at::randn({6});
  r.clip_features = at::randn({2, 5});
  return r;
}

struct Columns {
  at::Tensor seed = at::arange(kRecords, at::kLong) * 1000003 - 7;
  at::Tensor score = at::linspace(-1, 1, kRecords * 2).reshape({kRecords, 2}).to(at::kFloat);
  at::Tensor kept = (at::arange(kRecords, at::kLong) % 2).to(at::kByte);
  std::vector<std::string> style;
  Columns() {
    for (int64_t i = 0; i < kRecords; ++i) style.push_back(i % 3 == 2 ? "\xC3\xB6l " + std::to_string(i) : "vanilla");
  }
};

/// Writes records [begin, end) with their slices of the columns, the attribute and the global.
int64_t write_part(const std::string& path, int64_t begin, int64_t end) {
  const Columns c;
  TrainingSetWriter w(path);
  for (int64_t i = begin; i < end; ++i) w.add(make_record(i));
  w.set_column("seed", c.seed.slice(0, begin, end));
  w.set_column("score", c.score.slice(0, begin, end));
  w.set_column("kept", c.kept.slice(0, begin, end));
  w.set_string_column("style", std::vector<std::string>(c.style.begin() + begin, c.style.begin() + end));
  w.set_attribute("generation", "{\"steps\": 1, \"model\": \"sdxl-turbo\"}");
  w.set_global(kClipUncond, at::full({1, 2, 5}, 0.5f));
  return w.finish();
}

ShardEntry entry_for(const std::string& dir, const std::string& rel, int64_t records) {
  const auto bytes = static_cast<int64_t>(std::filesystem::file_size(std::filesystem::path(dir) / rel));
  return {rel, records, bytes};
}

/// The same 12 records as one file (whole.h5) and as a manifest (set.json) of three shards.
struct Sets {
  std::string whole, manifest, shard0, shard1, shard2;
  Manifest m;
  explicit Sets(const ScratchDir& d) {
    whole = d.path("whole.h5");
    manifest = d.path("set.json");
    std::filesystem::create_directories(d.dir / "shards");
    shard0 = d.path("shards/00000.h5");
    shard1 = d.path("shards/00001.h5");
    shard2 = d.path("shards/00002.h5");
    EXPECT_EQ(write_part(whole, 0, kRecords), kRecords);
    EXPECT_EQ(write_part(shard0, 0, kSplit), kSplit);
    EXPECT_EQ(write_part(shard1, kSplit, kSplit), 0);
    EXPECT_EQ(write_part(shard2, kSplit, kRecords), kRecords - kSplit);
    const std::string dir = d.dir.string();
    m.shards = {entry_for(dir, "shards/00000.h5", kSplit), entry_for(dir, "shards/00001.h5", 0),
                entry_for(dir, "shards/00002.h5", kRecords - kSplit)};
    m.extra = {{"generator", "sdxl-turbo"}, {"accepted", 12}};
    write_manifest(manifest, m);
  }
};

/// Asserts that opening `manifest` fails with a DataError naming it and containing every `needles`.
void expect_manifest_error(const std::string& manifest, const std::vector<std::string>& needles) {
  try {
    TrainingSet::open(manifest);
    FAIL() << manifest << " opened";
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), manifest) << e.what();
    for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

int64_t open_descriptors() {
  int64_t n = 0;
  for ([[maybe_unused]] const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

TEST(DataManifest, WriteReadRoundTripKeepsExtraKeys) {
  ScratchDir d;
  const std::string path = d.path("m.json");
  Manifest m;
  m.shards = {{"shards/00000.h5", 123, 456789}, {"/abs/00001.h5", 0, 2048}};
  m.extra = {{"settings", {{"steps", 1}, {"guidance", 0.0}}}, {"note", "gr\xC3\xBC\xC3\x9F"}};
  write_manifest(path, m);
  const Manifest back = read_manifest(path);
  EXPECT_EQ(back.shards, m.shards);
  EXPECT_EQ(back.extra, m.extra);
  const json j = json::parse(std::ifstream(path));
  EXPECT_EQ(j["format"], "lookahead-trainingset-manifest");
  EXPECT_EQ(j["version"], 1);
  EXPECT_EQ(j["shards"][0]["records"], 123);
  EXPECT_EQ(j["shards"][0]["bytes"], 456789);
  EXPECT_EQ(j["note"], "gr\xC3\xBC\xC3\x9F");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  // Shard paths: relative to the manifest's folder, absolute as given.
  EXPECT_EQ(shard_file(path, m.shards[0]), d.path("shards/00000.h5"));
  EXPECT_EQ(shard_file(path, m.shards[1]), "/abs/00001.h5");
  // A manifest is told by its name or its first byte; an HDF5 file and a missing file are not.
  EXPECT_TRUE(is_manifest(path));
  const std::string unnamed = d.path("set.manifest");
  write_text(unnamed, "  \n{\"format\": 1}");
  EXPECT_TRUE(is_manifest(unnamed));
  EXPECT_FALSE(is_manifest(test::make_synth(d, 1, 2, 16)));
  EXPECT_FALSE(is_manifest(d.path("missing.json")));
  // The format's own keys cannot be smuggled in through extra.
  Manifest bad = m;
  bad.extra["shards"] = 1;
  EXPECT_THROW(write_manifest(d.path("bad.json"), bad), DataError);
  EXPECT_FALSE(std::filesystem::exists(d.path("bad.json")));
}

TEST(DataManifest, BadKeysNameTheManifestAndTheShard) {
  ScratchDir d;
  const std::string path = d.path("m.json");
  const std::string shard = R"({"path": "a.h5", "records": 1, "bytes": 10})";
  const std::string head = R"({"format": "lookahead-trainingset-manifest", "version": 1, "shards": [)";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {head + shard + R"(, {"path": "b.h5", "records": -1, "bytes": 10}]})",
       {"shard 1 ('b.h5')", "key 'records' must be a non-negative integer"}},
      {head + shard + R"(, {"path": "b.h5", "records": 1}]})", {"shard 1 ('b.h5')", "missing key 'bytes'"}},
      {head + shard + R"(, {"path": "b.h5", "records": 1.5, "bytes": 10}]})", {"shard 1 ('b.h5')", "'records'"}},
      {head + R"({"records": 1, "bytes": 10}]})", {"shard 0", "key 'path'"}},
      {head + R"(7]})", {"shard 0", "must be an object"}},
      {R"({"format": "something-else", "version": 1, "shards": []})", {"key 'format'"}},
      {R"({"format": "lookahead-trainingset-manifest", "version": 2, "shards": []})", {"version 2"}},
      {R"({"format": "lookahead-trainingset-manifest", "version": 1})", {"key 'shards'"}},
      {R"({"format": "lookahead-trainingset-manifest", "version": 1, "shards": [)", {"not valid JSON"}},
      {"[1, 2]", {"must be a JSON object"}},
  };
  for (const auto& [text, needles] : cases) {
    write_text(path, text);
    try {
      read_manifest(path);
      FAIL() << "accepted: " << text;
    } catch (const DataError& e) {
      EXPECT_EQ(e.file(), path);
      for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
    expect_manifest_error(path, needles);  // TrainingSet::open reports the same
  }
}

// Every accessor of the manifest set equals the single file's, record by record.
TEST(DataManifest, ShardedSetReadsExactlyAsOneFile) {
  ScratchDir d;
  Sets s(d);
  auto one = TrainingSet::open(s.whole);
  const auto fds = open_descriptors();
  auto many = TrainingSet::open(s.manifest);
  EXPECT_EQ(open_descriptors(), fds + 3) << "one descriptor per shard (HDF5's own closed after open)";
  EXPECT_EQ(many->path(), s.manifest);
  EXPECT_TRUE(many->from_manifest());
  EXPECT_FALSE(one->from_manifest());
  EXPECT_EQ(many->num_shards(), 3);
  EXPECT_EQ(one->num_shards(), 1);
  ASSERT_EQ(many->size(), kRecords);
  EXPECT_EQ(many->identities(), one->identities());
  EXPECT_EQ(many->photo_flags(), one->photo_flags());
  EXPECT_EQ(many->identities()[kSplit], 100 + kSplit / 3);
  for (const char* name : {kLatents, kPromptEmbeds, kPooledPromptEmbeds, kClipFeatures})
    EXPECT_EQ(many->extra_shape(name), one->extra_shape(name)) << name;
  EXPECT_EQ(many->extra_shape(kLatents), (std::vector<int64_t>{4, 2, 2}));
  for (int64_t i = 0; i < kRecords; ++i) {
    const std::string at = "record " + std::to_string(i);
    const Record a = one->get(i), b = many->get(i);
    EXPECT_EQ(b.index, i) << at;
    EXPECT_TRUE(at::equal(a.image, b.image)) << at;
    EXPECT_EQ(a.identity, b.identity) << at;
    EXPECT_EQ(a.prompt, b.prompt) << at;
    EXPECT_EQ(b.prompt, "portr\xC3\xA4t " + std::to_string(i)) << at;
    EXPECT_EQ(a.photo, b.photo) << at;
    EXPECT_TRUE(at::equal(a.landmarks, b.landmarks)) << at;
    EXPECT_TRUE(at::equal(a.latents, b.latents)) << at;
    EXPECT_EQ(b.latents.scalar_type(), at::kHalf) << at;
    EXPECT_TRUE(at::equal(a.prompt_embeds, b.prompt_embeds)) << at;
    EXPECT_TRUE(at::equal(a.pooled_prompt_embeds, b.pooled_prompt_embeds)) << at;
    EXPECT_TRUE(at::equal(a.clip_features, b.clip_features)) << at;
    EXPECT_TRUE(at::equal(b.latents, make_record(i).latents)) << at;
    EXPECT_EQ(one->image_bytes(i), many->image_bytes(i)) << at;
    EXPECT_EQ(many->image_bytes(i), make_record(i).image) << at;
    EXPECT_TRUE(at::equal(one->extra(kClipFeatures, i), many->extra(kClipFeatures, i))) << at;
    EXPECT_EQ(one->identity(i), many->identity(i)) << at;
    EXPECT_EQ(one->photo(i), many->photo(i)) << at;
    EXPECT_EQ(one->prompt(i), many->prompt(i)) << at;
    EXPECT_TRUE(at::equal(one->landmarks(i), many->landmarks(i))) << at;
    EXPECT_EQ(one->image_size(i), many->image_size(i)) << at;
  }
  const Columns c;
  EXPECT_EQ(many->column_names(), (std::vector<std::string>{"kept", "score", "seed", "style"}));
  EXPECT_EQ(many->column_names(), one->column_names());
  for (const char* name : {"seed", "score", "kept"}) {
    EXPECT_TRUE(at::equal(many->column(name), one->column(name))) << name;
    EXPECT_EQ(many->column(name).scalar_type(), one->column(name).scalar_type()) << name;
  }
  EXPECT_TRUE(at::equal(many->column("seed"), c.seed));
  EXPECT_TRUE(at::equal(many->column("score"), c.score));
  EXPECT_EQ(many->string_column("style"), c.style);
  EXPECT_EQ(many->string_column("style"), one->string_column("style"));
  EXPECT_EQ(many->attribute("generation"), "{\"steps\": 1, \"model\": \"sdxl-turbo\"}");
  EXPECT_EQ(many->global_names(), (std::vector<std::string>{kClipUncond}));
  EXPECT_TRUE(at::equal(many->global(kClipUncond), at::full({1, 2, 5}, 0.5f)));
  // Out of range names the manifest and the global index.
  try {
    many->get(kRecords);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_EQ(e.file(), s.manifest);
    EXPECT_EQ(e.record(), kRecords);
  }
  // `data info` on the manifest.
  std::ostringstream info;
  describe(s.manifest, /*verify=*/true, info);
  EXPECT_NE(info.str().find("manifest    3 shards"), std::string::npos) << info.str();
  EXPECT_NE(info.str().find("records     12 (8 photos"), std::string::npos) << info.str();
  EXPECT_NE(info.str().find("columns/style [N] strings"), std::string::npos) << info.str();
  EXPECT_NE(info.str().find("verified    12/12 records"), std::string::npos) << info.str();
}

TEST(DataManifest, ManifestOfOnlyEmptyShardsAndOfNone) {
  ScratchDir d;
  write_part(d.path("e.h5"), 0, 0);
  write_manifest(d.path("e.json"), {{entry_for(d.dir.string(), "e.h5", 0)}, nullptr});
  auto set = TrainingSet::open(d.path("e.json"));
  EXPECT_EQ(set->size(), 0);
  EXPECT_EQ(set->num_shards(), 1);
  EXPECT_EQ(set->column("seed").sizes(), (at::IntArrayRef{0}));
  EXPECT_FALSE(set->has_extra(kLatents));
  write_manifest(d.path("none.json"), {});
  auto none = TrainingSet::open(d.path("none.json"));
  EXPECT_EQ(none->size(), 0);
  EXPECT_EQ(none->num_shards(), 0);
  EXPECT_THROW(none->get(0), DataError);
}

TEST(DataManifest, ShardsThatDisagreeWithTheManifestAreNamed) {
  ScratchDir d;
  Sets s(d);
  // A shard whose size differs from the manifest's (rewritten after the manifest was written).
  Manifest m = s.m;
  m.shards[2].bytes += 1;
  write_manifest(s.manifest, m);
  expect_manifest_error(s.manifest, {"shard 2 ('shards/00002.h5')", "has " + std::to_string(s.m.shards[2].bytes) +
                                                                        " bytes, the manifest says " +
                                                                        std::to_string(m.shards[2].bytes)});
  // A record count that differs (size right).
  m = s.m;
  m.shards[0].records = 4;
  write_manifest(s.manifest, m);
  expect_manifest_error(s.manifest, {"shard 0 ('shards/00000.h5')", "has 5 records, the manifest says 4"});
  // A missing shard.
  m = s.m;
  m.shards[1].path = "shards/gone.h5";
  write_manifest(s.manifest, m);
  expect_manifest_error(s.manifest, {"shard 1 ('shards/gone.h5')", "no such file", d.path("shards/gone.h5")});
  // A shard that is not a training-set file at all (its size in the manifest matches).
  write_text(d.path("shards/junk.h5"), "not hdf5");
  m = s.m;
  m.shards[1] = entry_for(d.dir.string(), "shards/junk.h5", 0);
  write_manifest(s.manifest, m);
  expect_manifest_error(s.manifest, {"shard 1 ('shards/junk.h5')", "not an HDF5 file"});
}

TEST(DataManifest, ShardsThatDisagreeWithEachOtherAreNamed) {
  ScratchDir d;
  const std::string dir = d.dir.string();
  write_part(d.path("a.h5"), 0, 3);
  {
    // Latents of another shape in the second shard.
    TrainingSetWriter w(d.path("b.h5"));
    RecordData r = make_record(3);
    r.latents = at::zeros({4, 3, 3}, at::kHalf);
    w.add(r);
    w.set_column("seed", at::zeros({1}, at::kLong));
    w.finish();
  }
  write_manifest(d.path("m.json"), {{entry_for(dir, "a.h5", 3), entry_for(dir, "b.h5", 1)}, nullptr});
  expect_manifest_error(d.path("m.json"),
                        {"shard 1 ('b.h5')", "latents is [4,3,3] Half", "shard 0 ('a.h5') has [4,2,2]"});
  {
    // Same tensors, but column "score" missing and "seed" of another dtype.
    TrainingSetWriter w(d.path("c.h5"));
    w.add(make_record(3));
    w.set_column("seed", at::zeros({1}, at::kInt));
    w.finish();
  }
  write_manifest(d.path("m.json"), {{entry_for(dir, "a.h5", 3), entry_for(dir, "c.h5", 1)}, nullptr});
  expect_manifest_error(d.path("m.json"), {"shard 1 ('c.h5'): column 'kept' is missing"});
}

TEST(DataManifest, CorruptRecordNamesTheShardFileAndItsIndex) {
  ScratchDir d;
  Sets s(d);
  test::corrupt_record(s.shard2, 1);  // global record kSplit + 1; the file's size is unchanged
  auto set = TrainingSet::open(s.manifest);
  EXPECT_NO_THROW(set->get(kSplit));
  EXPECT_NO_THROW(set->get(kSplit + 2));
  for (int pass = 0; pass < 2; ++pass) {
    try {
      if (pass == 0)
        set->get(kSplit + 1);
      else
        set->image_bytes(kSplit + 1);
      FAIL() << "the corrupt record was read";
    } catch (const DataError& e) {
      EXPECT_EQ(e.file(), s.shard2);
      EXPECT_EQ(e.record(), 1);
      const std::string what = e.what();
      EXPECT_NE(what.find(s.shard2 + ": record 1: image checksum mismatch"), std::string::npos) << what;
      EXPECT_NE(what.find("global record 6 of manifest " + s.manifest), std::string::npos) << what;
    }
  }
}

LoaderOptions loader_options(int threads) {
  LoaderOptions o;
  o.resolution = 8;
  o.global_batch = 4;
  o.seed = 11;
  o.threads = threads;
  o.prefetch = 2;
  return o;
}

// The Loader and the pairing see the same records, so the same batches, over the manifest; and a
// reference is a vanilla photo whenever the identity has another one (here: always).
TEST(DataManifest, LoaderAndPairingOverAManifestEqualTheSingleFile) {
  ScratchDir d;
  Sets s(d);
  auto one = TrainingSet::open(s.whole);
  auto many = TrainingSet::open(s.manifest);
  for (int64_t epoch = 0; epoch < 4; ++epoch)
    EXPECT_EQ(make_pairs(many->identities(), many->photo_flags(), 11, epoch).pairs,
              make_pairs(one->identities(), one->photo_flags(), 11, epoch).pairs);
  Loader a(one, loader_options(0));
  Loader b(many, loader_options(2));
  for (int k = 0; k < 7; ++k) {  // 3 batches per epoch: crosses two epoch boundaries
    const LoadedBatch x = a.next(), y = b.next();
    const std::string at = "batch " + std::to_string(k);
    EXPECT_EQ(x.pairs, y.pairs) << at;
    EXPECT_EQ(x.epoch, y.epoch) << at;
    EXPECT_TRUE(at::equal(x.target_images, y.target_images)) << at;
    EXPECT_TRUE(at::equal(x.reference_images, y.reference_images)) << at;
    EXPECT_TRUE(at::equal(x.target_landmarks, y.target_landmarks)) << at;
    EXPECT_TRUE(at::equal(x.reference_landmarks, y.reference_landmarks)) << at;
    EXPECT_EQ(x.target_prompts, y.target_prompts) << at;
    EXPECT_EQ(x.reference_prompts, y.reference_prompts) << at;
    EXPECT_TRUE(at::equal(x.target_latents, y.target_latents)) << at;
    EXPECT_TRUE(at::equal(x.reference_clip_features, y.reference_clip_features)) << at;
    for (const Pair& p : y.pairs) EXPECT_TRUE(many->photo(p.reference)) << at << ": stylised reference " << p.reference;
  }
  EXPECT_EQ(a.num_pairs(), kRecords);
  EXPECT_EQ(b.num_pairs(), kRecords);
}

// Generated sets flag stylised targets photo = 0; every reference is another vanilla record of the
// identity, and the single vanilla record of an identity with one is no target (docs/data.md,
// "Pairing").
TEST(DataManifest, PairingNeverTakesStylisedReferences) {
  std::vector<int64_t> id;
  std::vector<uint8_t> photo;
  for (int64_t k = 0; k < 60; ++k) {  // identity k: 1 + k % 3 vanilla records, then 3 stylised
    for (int64_t j = 0; j < 1 + k % 3; ++j) id.push_back(k), photo.push_back(1);
    for (int64_t j = 0; j < 3; ++j) id.push_back(k), photo.push_back(0);
  }
  for (int64_t epoch = 0; epoch < 5; ++epoch) {
    const Pairing pairing = make_pairs(id, photo, 3, epoch);
    EXPECT_EQ(pairing.excluded_sole_photos, 20) << "one per identity with a single vanilla record";
    EXPECT_EQ(static_cast<int64_t>(pairing.pairs.size()), static_cast<int64_t>(id.size()) - 20);
    for (const Pair& p : pairing.pairs) {
      EXPECT_TRUE(photo[p.reference]) << "target " << p.target << " got stylised reference " << p.reference;
      EXPECT_NE(p.reference, p.target);
      EXPECT_EQ(id[p.reference], id[p.target]);
    }
  }
}

}  // namespace
}  // namespace lookahead::data
