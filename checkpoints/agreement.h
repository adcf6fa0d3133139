// Collective agreement for checkpoint save / load: every rank learns whether any rank failed and
// throws the same CheckpointError, so a failure on one rank (typically rank 0, the only writer)
// never leaves the others waiting in the next collective. Internal to checkpoints/.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "dist/communicator.h"

namespace lookahead::ckpt::detail {

inline bool is_multi(const dist::CommunicatorPtr& comm) { return comm && comm->size() > 1; }
inline int rank_of(const dist::CommunicatorPtr& comm) { return comm ? comm->rank() : 0; }
inline int size_of(const dist::CommunicatorPtr& comm) { return comm ? comm->size() : 1; }

/// Broadcasts `text` from `root` (nothing to do in a world of one).
void broadcast_string(const dist::CommunicatorPtr& comm, int root, std::string& text);

/// Collective: every rank learns whether any rank failed, and if so throws CheckpointError with
/// the message of the lowest failing rank.
void agree(const dist::CommunicatorPtr& comm, const std::optional<std::string>& error);

/// Runs `fn`, turning any exception into its message (for agree()).
std::optional<std::string> capture(const std::function<void()>& fn);

/// Collective: throws the same CheckpointError on every rank unless all ranks pass `value`.
void check_same(const dist::CommunicatorPtr& comm, const std::string& what, uint64_t value);

}  // namespace lookahead::ckpt::detail
