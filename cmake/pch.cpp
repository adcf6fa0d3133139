// Translation unit that owns the shared precompiled header (see cmake/torch_pch.h).
#include "cmake/torch_pch.h"
