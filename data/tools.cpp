// pack, synth and describe.
#include "data/tools.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>

#include "data/error.h"
#include "data/image_io.h"
#include "data/pairing.h"
#include "data/random.h"
#include "data/training_set.h"
#include "data/training_set_writer.h"

namespace lookahead::data {

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(path, -1, "cannot read");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

const char* const kPhotoPrompts[] = {"a photo of a face", "a close-up photo of a person", "a portrait photo of a person"};
const char* const kStylePrompts[] = {"an oil painting of a face", "a pencil sketch of a person",
                                     "a watercolor portrait of a person", "a cartoon of a face",
                                     "a 3d render of a person"};

double gaussian(SplitMix& rng) {
  double u1 = rng.uniform01(), u2 = rng.uniform01();
  return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(2.0 * M_PI * u2);
}

at::Tensor random_tensor(const std::vector<int64_t>& shape, SplitMix& rng, at::ScalarType dtype) {
  at::Tensor t = at::empty(shape, at::kFloat);
  float* p = t.data_ptr<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(gaussian(rng));
  return t.to(dtype);
}

struct Rgb {
  double r, g, b;
};

Rgb random_color(SplitMix& rng, double lo, double hi) {
  return {lo + (hi - lo) * rng.uniform01(), lo + (hi - lo) * rng.uniform01(), lo + (hi - lo) * rng.uniform01()};
}

bool in_ellipse(double u, double v, double cu, double cv, double a, double b) {
  const double x = (u - cu) / a, y = (v - cv) / b;
  return x * x + y * y <= 1.0;
}

}  // namespace

SynthFace draw_synthetic_face(int64_t identity, int64_t variant, int64_t size, uint64_t seed, bool photo) {
  TORCH_CHECK(size >= 16, "draw_synthetic_face: size must be >= 16, got ", size);
  // Identity: face geometry and colours (what an identity encoder should pick up).
  SplitMix id_rng(derive_seed(seed, static_cast<uint64_t>(identity), 1));
  const double aspect = 0.75 + 0.2 * id_rng.uniform01();
  const double ex = 0.35 + 0.15 * id_rng.uniform01(), ey = 0.15 + 0.15 * id_rng.uniform01();
  const double ny = 0.08 + 0.12 * id_rng.uniform01();
  const double mx = 0.25 + 0.2 * id_rng.uniform01(), my = 0.38 + 0.12 * id_rng.uniform01();
  Rgb skin = random_color(id_rng, 90, 235), hair = random_color(id_rng, 10, 120), iris = random_color(id_rng, 0, 150);
  // Variant: placement and background (what it should ignore).
  SplitMix var_rng(derive_seed(seed, static_cast<uint64_t>(identity), 1000 + static_cast<uint64_t>(variant)));
  const double S = static_cast<double>(size);
  const double scale = 0.85 + 0.25 * var_rng.uniform01();
  const double cx = S / 2 + (var_rng.uniform01() - 0.5) * 0.12 * S, cy = S / 2 + (var_rng.uniform01() - 0.5) * 0.12 * S;
  const double theta = (var_rng.uniform01() - 0.5) * 0.5;
  Rgb bg = random_color(var_rng, 0, 255);
  if (!photo) {  // a flat palette: same geometry, different rendering
    SplitMix style_rng(derive_seed(seed, static_cast<uint64_t>(identity), 5000 + static_cast<uint64_t>(variant)));
    skin = random_color(style_rng, 60, 255);
    hair = random_color(style_rng, 0, 255);
  }
  const double b = 0.36 * S * scale, a = b * aspect;  // face semi-axes (horizontal a, vertical b)
  const double c = std::cos(theta), s = std::sin(theta);
  // Landmarks in face coordinates (u right, v down), then rotated into the image.
  const double local[5][2] = {{-ex * a, -ey * b}, {ex * a, -ey * b}, {0, ny * b}, {-mx * a, my * b}, {mx * a, my * b}};
  at::Tensor lm = at::empty({5, 2}, at::kFloat);
  for (int k = 0; k < 5; ++k) {
    lm[k][0] = static_cast<float>(cx + c * local[k][0] - s * local[k][1]);
    lm[k][1] = static_cast<float>(cy + s * local[k][0] + c * local[k][1]);
  }
  const double eye_r = 0.09 * a, iris_r = 0.05 * a, nose_r = 0.06 * a, mouth_h = 0.07 * b;
  at::Tensor img = at::empty({size, size, 3}, at::kByte);
  uint8_t* px = img.data_ptr<uint8_t>();
  for (int64_t i = 0; i < size; ++i) {
    for (int64_t j = 0; j < size; ++j) {
      // Pixel centers at integer coordinates, the landmark convention.
      const double dx = static_cast<double>(j) - cx, dy = static_cast<double>(i) - cy;
      const double u = c * dx + s * dy, v = -s * dx + c * dy;
      Rgb col = bg;
      if (in_ellipse(u, v, 0, -0.12 * b, 1.08 * a, 1.05 * b)) col = hair;
      if (in_ellipse(u, v, 0, 0, a, b)) {
        col = skin;
        if (photo) {  // soft shading so photos are not flat
          const double shade = 1.0 - 0.25 * ((u / a) * (u / a) + (v / b) * (v / b));
          col = {col.r * shade, col.g * shade, col.b * shade};
        }
      }
      for (int k = 0; k < 2; ++k) {
        if (in_ellipse(u, v, local[k][0], local[k][1], eye_r * 1.6, eye_r)) col = {245, 245, 245};
        if (in_ellipse(u, v, local[k][0], local[k][1], iris_r, iris_r)) col = iris;
      }
      if (in_ellipse(u, v, local[2][0], local[2][1], nose_r, nose_r)) col = {skin.r * 0.6, skin.g * 0.5, skin.b * 0.5};
      if (in_ellipse(u, v, 0, my * b, mx * a, mouth_h)) col = {170, 40, 50};
      if (!photo) {  // posterize
        col = {std::floor(col.r / 64) * 64 + 32, std::floor(col.g / 64) * 64 + 32, std::floor(col.b / 64) * 64 + 32};
      }
      uint8_t* o = px + (i * size + j) * 3;
      o[0] = static_cast<uint8_t>(std::clamp(col.r, 0.0, 255.0));
      o[1] = static_cast<uint8_t>(std::clamp(col.g, 0.0, 255.0));
      o[2] = static_cast<uint8_t>(std::clamp(col.b, 0.0, 255.0));
    }
  }
  return {img, lm};
}

int64_t write_synthetic(const SynthOptions& o) {
  TORCH_CHECK(o.identities >= 1 && o.per_identity >= 1, "synth: identities and per-identity must be >= 1");
  TORCH_CHECK(o.prompt_embeds.empty() || o.prompt_embeds.size() == 2, "synth: prompt embeddings shape is M,D");
  TORCH_CHECK(o.clip_features.empty() || o.clip_features.size() == 2, "synth: CLIP features shape is T,D");
  TrainingSetWriter w(o.out);
  for (int64_t id = 0; id < o.identities; ++id) {
    for (int64_t k = 0; k < o.per_identity; ++k) {
      SplitMix rng(derive_seed(o.seed, static_cast<uint64_t>(id), 9000 + static_cast<uint64_t>(k)));
      // The first record of an identity is always a photo so that every identity has a reference.
      const bool photo = k == 0 || rng.uniform01() < o.photo_fraction;
      SynthFace face = draw_synthetic_face(id, k, o.size, o.seed, photo);
      RecordData r;
      r.image = encode_png(face.image);
      r.height = r.width = o.size;
      r.identity = id;
      r.prompt = photo ? kPhotoPrompts[rng.uniform(3)] : kStylePrompts[rng.uniform(5)];
      r.photo = photo;
      r.landmarks = face.landmarks;
      if (o.latent_size > 0)
        r.latents = random_tensor({o.latent_channels, o.latent_size, o.latent_size}, rng,
                                  o.half_latents ? at::kHalf : at::kFloat);
      if (!o.prompt_embeds.empty()) r.prompt_embeds = random_tensor(o.prompt_embeds, rng, at::kFloat);
      if (o.pooled > 0) r.pooled_prompt_embeds = random_tensor({o.pooled}, rng, at::kFloat);
      if (!o.clip_features.empty()) r.clip_features = random_tensor(o.clip_features, rng, at::kFloat);
      w.add(r);
    }
  }
  return w.finish();
}

PackReport pack_folder(const PackOptions& o) {
  std::ifstream in(o.meta_jsonl);
  if (!in) throw DataError(o.meta_jsonl, -1, "cannot read the metadata file");
  TrainingSetWriter w(o.out);
  PackReport rep;
  std::map<std::string, int64_t> names;  // string identities -> numbers
  std::set<int64_t> ids;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto where = [&](const std::string& msg) { return "line " + std::to_string(lineno) + ": " + msg; };
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw DataError(o.meta_jsonl, -1, where(std::string("not JSON: ") + e.what()));
    }
    try {
      if (!j.is_object() || !j.contains("file") || !j["file"].is_string())
        throw DataError(o.meta_jsonl, -1, where("needs a string \"file\""));
      if (!j.contains("identity")) throw DataError(o.meta_jsonl, -1, where("needs an \"identity\""));
      RecordData r;
      const auto& jid = j["identity"];
      if (jid.is_number_integer()) {
        r.identity = jid.get<int64_t>();
      } else if (jid.is_string()) {
        auto [it, fresh] = names.emplace(jid.get<std::string>(), static_cast<int64_t>(names.size()));
        r.identity = it->second;
      } else {
        throw DataError(o.meta_jsonl, -1, where("\"identity\" must be an integer or a string"));
      }
      r.prompt = j.value("prompt", std::string());
      r.photo = j.value("photo", true);
      if (j.contains("landmarks") && !j["landmarks"].is_null()) {
        const auto& l = j["landmarks"];
        if (!l.is_array() || l.size() != 5) throw DataError(o.meta_jsonl, -1, where("\"landmarks\" must be 5 [x, y]"));
        r.landmarks = at::empty({5, 2}, at::kFloat);
        for (int k = 0; k < 5; ++k) {
          if (!l[k].is_array() || l[k].size() != 2 || !l[k][0].is_number() || !l[k][1].is_number())
            throw DataError(o.meta_jsonl, -1, where("\"landmarks\" must be 5 [x, y] numbers"));
          r.landmarks[k][0] = l[k][0].get<float>();
          r.landmarks[k][1] = l[k][1].get<float>();
        }
        ++rep.with_landmarks;
      }
      const std::string file = (std::filesystem::path(o.images_dir) / j["file"].get<std::string>()).string();
      r.image = read_file(file);
      try {
        w.add(r);  // decodes once: an unreadable image fails here, not during training
      } catch (const DataError& e) {
        throw DataError(o.meta_jsonl, -1, where(file + ": " + e.what()));
      }
      ids.insert(r.identity);
      rep.photos += r.photo ? 1 : 0;
    } catch (const nlohmann::json::exception& e) {
      throw DataError(o.meta_jsonl, -1, where(e.what()));
    }
  }
  rep.records = w.finish();
  rep.identities = static_cast<int64_t>(ids.size());
  return rep;
}

void describe(const std::string& path, bool verify, std::ostream& out, int64_t* corrupt) {
  auto set = TrainingSet::open(path);
  const int64_t n = set->size();
  std::set<int64_t> ids(set->identities().begin(), set->identities().end());
  int64_t photos = 0, with_lm = 0;
  int64_t hmin = INT64_MAX, hmax = 0, wmin = INT64_MAX, wmax = 0;
  for (int64_t i = 0; i < n; ++i) {
    photos += set->photo(i) ? 1 : 0;
    with_lm += std::isnan(set->landmarks(i)[0][0].item<float>()) ? 0 : 1;
    auto hw = set->image_size(i);
    hmin = std::min(hmin, hw[0]), hmax = std::max(hmax, hw[0]);
    wmin = std::min(wmin, hw[1]), wmax = std::max(wmax, hw[1]);
  }
  Pairing p = make_pairs(set->identities(), set->photo_flags(), 0, 0);
  out << path << ": " << kFormatName << " v" << kFormatVersion << "\n";
  if (set->from_manifest()) out << "  manifest    " << set->num_shards() << " shards\n";
  out << "  records     " << n << " (" << photos << " photos, " << with_lm << " with landmarks)\n"
      << "  identities  " << ids.size() << " (" << p.excluded_identities << " with a single record, excluded)\n"
      << "  pairs       " << p.pairs.size();
  if (p.excluded_sole_photos)
    out << " (" << p.excluded_sole_photos << " targets left out: their identity's only photo, stylised otherwise)";
  out << "\n";
  if (n > 0) out << "  image size  " << hmin << ".." << hmax << " x " << wmin << ".." << wmax << "\n";
  for (const char* name : {kLatents, kPromptEmbeds, kPooledPromptEmbeds, kClipFeatures}) {
    auto shape = set->extra_shape(name);
    if (shape.empty()) continue;
    out << "  " << name << " [N";
    for (int64_t d : shape) out << "," << d;
    out << "] " << (n > 0 ? c10::toString(set->extra(name, 0).scalar_type()) : "") << "\n";
  }
  for (const std::string& name : set->global_names()) {
    at::Tensor g = set->global(name);
    out << "  globals/" << name << " " << g.sizes() << " " << c10::toString(g.scalar_type()) << "\n";
  }
  for (const std::string& name : set->column_names()) {
    const at::Tensor c = set->column(name);
    out << "  columns/" << name << " ";
    if (c.defined()) {
      out << "[N";
      for (int64_t i = 1; i < c.dim(); ++i) out << "," << c.size(i);
      out << "] " << c10::toString(c.scalar_type()) << "\n";
    } else {
      out << "[N] strings\n";
    }
  }
  for (const std::string& name : set->attribute_names())
    out << "  attributes/" << name << " (" << set->attribute(name).size() << " bytes)\n";
  int64_t bad = 0;
  if (verify) {
    for (int64_t i = 0; i < n; ++i) {
      try {
        set->get(i);
      } catch (const DataError& e) {
        ++bad;
        out << "  CORRUPT " << e.what() << "\n";
      }
    }
    out << "  verified    " << n - bad << "/" << n << " records\n";
  }
  if (corrupt) *corrupt = bad;
}

}  // namespace lookahead::data
