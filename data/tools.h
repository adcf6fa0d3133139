// Data-set tools behind `lookahead data ...`: pack a folder of images + JSONL metadata, and write a
// synthetic face-like set whose landmarks are known exactly (tests and the tiny demo).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace lookahead::data {

struct PackOptions {
  std::string images_dir;  ///< `file` entries are relative to this folder
  std::string meta_jsonl;  ///< one JSON object per line, see docs/data.md
  std::string out;
};

struct PackReport {
  int64_t records = 0, identities = 0, photos = 0, with_landmarks = 0;
};

/// Packs every JSONL line's image (bytes stored as they are, after a decode check) into `out`.
/// JSONL line: {"file": "a.jpg", "identity": 3 | "name", "prompt": "...", "photo": true,
/// "landmarks": [[x,y] x5]} (prompt, photo, landmarks optional; photo defaults to true). String
/// identities are numbered in order of first appearance. Throws DataError naming file and line.
PackReport pack_folder(const PackOptions& options);

struct SynthOptions {
  std::string out;
  int64_t identities = 4;
  int64_t per_identity = 3;
  int64_t size = 64;              ///< image side in pixels
  uint64_t seed = 0;
  double photo_fraction = 0.5;    ///< records after an identity's first (always a photo)
  int64_t latent_size = 0;        ///< > 0: random latents [latent_channels, h, h]
  int64_t latent_channels = 4;
  bool half_latents = false;      ///< store latents as float16
  std::vector<int64_t> prompt_embeds;  ///< {M, D}: random prompt embeddings, empty = none
  int64_t pooled = 0;                  ///< P > 0: random pooled embeddings [P]
  std::vector<int64_t> clip_features;  ///< {T, D}: random CLIP features, empty = none
};

/// A drawn face and its exact landmarks.
struct SynthFace {
  at::Tensor image;      ///< uint8 [S,S,3]
  at::Tensor landmarks;  ///< float [5,2]: left eye, right eye, nose, left/right mouth corner
};

/// Procedural face of `identity` (shape and colours fixed per identity), variant `variant`
/// (position, scale, rotation, background); `photo` = false draws a flat "stylised" version.
SynthFace draw_synthetic_face(int64_t identity, int64_t variant, int64_t size, uint64_t seed, bool photo);

/// Writes identities x per_identity PNG-encoded synthetic records to options.out; returns the count.
int64_t write_synthetic(const SynthOptions& options);

/// A human-readable summary of a training-set file; with `verify`, decodes every record and
/// reports the corrupt ones (returns their count through `corrupt`).
void describe(const std::string& path, bool verify, std::ostream& out, int64_t* corrupt = nullptr);

}  // namespace lookahead::data
