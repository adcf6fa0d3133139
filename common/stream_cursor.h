// Where a run stands in its data stream: the one cursor type the sampler, the loader, the trainer
// and checkpoints share (a checkpoint stores it, a resumed run seeks to it).
#pragma once

#include <cstdint>

namespace lookahead::common {

/// `index` counts *global* samples already consumed in `epoch` (over all ranks), so a cursor
/// saved at one world size resumes at another.
struct StreamCursor {
  int64_t epoch = 0;
  int64_t index = 0;
  bool operator==(const StreamCursor&) const = default;
};

}  // namespace lookahead::common
