// The switches that make the paper's ablations (docs/ablations.md): which image the identity loss
// sees and whether the KV encoder exists. A header of its own so that configuration code can name
// them without the model's headers.
#pragma once

namespace lookahead::model {

/// Which image the lookahead branch's losses compare with the reference:
///   lcm: the one-step LCM preview, a second UNet run with the LCM-LoRA at scale α (LCM-Lookahead);
///   x0:  the frozen base's own x̂0 estimate at the diffusion branch's timestep, decoded from that
///        branch's forward (the paper's "x̂0-approximation" baseline: no LCM-LoRA, no second run).
enum class PreviewKind { kLcm, kX0 };

/// Whether the KV encoder (shared self-attention) runs: off trains IP-Adapter Plus alone.
enum class KvEncoderMode { kOn, kOff };

}  // namespace lookahead::model
