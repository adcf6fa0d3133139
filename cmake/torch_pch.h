// Precompiled header shared by every Lookahead target: the torch C++ API and the standard
// library pieces nearly every translation unit uses.
#pragma once
#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
