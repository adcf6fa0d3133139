// Building a network whose every weight a file is about to overwrite, without first filling it.
#pragma once

namespace lookahead::model::nn {

/// While a SkipInit lives on this thread, the modules built here leave their parameters as
/// at::empty allocates them (no values, and on Linux no resident pages until written) instead of
/// their random or constant initial values. Only for a network that a strict load_state_dict
/// (every parameter and buffer present in the file) fills next: at SDXL's 2.6 B parameters the
/// initial values cost tens of seconds and a full pass over memory that the load repeats.
/// Buffers derived from the configuration are still computed.
class SkipInit {
 public:
  SkipInit();
  ~SkipInit();
  SkipInit(const SkipInit&) = delete;
  SkipInit& operator=(const SkipInit&) = delete;

  /// True while a SkipInit lives on this thread.
  static bool active();

 private:
  bool previous_;
};

}  // namespace lookahead::model::nn
