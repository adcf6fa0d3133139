#include "model/nn/skip_init.h"

namespace lookahead::model::nn {

namespace {
thread_local bool skip_init_active = false;
}  // namespace

SkipInit::SkipInit() : previous_(skip_init_active) { skip_init_active = true; }

SkipInit::~SkipInit() { skip_init_active = previous_; }

bool SkipInit::active() { return skip_init_active; }

}  // namespace lookahead::model::nn
