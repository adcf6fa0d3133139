// How sampling combines the encoder's conditions: a header of its own so that configuration code
// can name the mode without the generation pipeline's headers.
#pragma once

namespace lookahead::model {

/// cfg: classifier-free guidance on the text; lookahead: the three-term guidance with and without
/// the reference K/V (docs/evaluation.md, "Sampling and guidance").
enum class GuidanceMode { kCfg, kLookahead };

}  // namespace lookahead::model
