// The factory that builds an inference sampler (Euler, DDIM, DPM-Solver++, LCM) from its name and
// a diffusers scheduler_config.json. Only the declaration lives here, so that the sampler base
// (sampler.h) and the concrete samplers never include each other.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string_view>

namespace lookahead::model::sched {

class Sampler;

/// Sampler families make_sampler knows.
enum class SamplerKind { kEuler, kDdim, kDpmSolver, kLcm };
/// "euler", "ddim", "dpm_solver" (also "dpm++", "dpmsolver++"), "lcm".
SamplerKind parse_sampler_kind(std::string_view name);

/// A sampler configured from a diffusers scheduler config (from_config semantics: absent keys take
/// the diffusers class defaults). Pass the SDXL `scheduler/scheduler_config.json` to get the
/// schedulers diffusers' `X.from_config(pipe.scheduler.config)` gives.
std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const nlohmann::json& scheduler_config);

}  // namespace lookahead::model::sched
