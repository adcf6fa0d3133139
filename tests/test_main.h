// Access to the World that tests/test_main.cpp starts for every gtest binary (a world of one when
// run directly, N ranks under mpiexec).
#pragma once

#include "dist/world.h"

namespace lookahead::test {

/// The process's World.
dist::World& world();

}  // namespace lookahead::test
