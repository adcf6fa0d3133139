// The factory that builds an inference sampler (Euler, Euler-ancestral, DDIM, DPM-Solver++, LCM)
// from its name, or from the `_class_name` diffusers wrote, and a diffusers scheduler_config.json.
// Only the declaration lives here, so that the sampler base (sampler.h) and the concrete samplers
// never include each other.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <string_view>

namespace lookahead::model::sched {

class Sampler;

/// Sampler families make_sampler knows.
enum class SamplerKind { kEuler, kDdim, kDpmSolver, kLcm, kEulerAncestral };
/// "euler", "euler_ancestral" (also "euler_a"), "ddim", "dpm_solver" (also "dpm++", "dpmsolver++"),
/// "lcm".
SamplerKind parse_sampler_kind(std::string_view name);

/// A sampler configured from a diffusers scheduler config (from_config semantics: absent keys take
/// the diffusers class defaults). Pass the SDXL `scheduler/scheduler_config.json` to get the
/// schedulers diffusers' `X.from_config(pipe.scheduler.config)` gives.
std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const nlohmann::json& scheduler_config);

/// The sampler of the class that wrote the config, as diffusers' pipelines load
/// `scheduler/scheduler_config.json`: `_class_name` EulerAncestralDiscreteScheduler,
/// EulerDiscreteScheduler, DDIMScheduler, DPMSolverMultistepScheduler or LCMScheduler, configured
/// like make_sampler. TORCH_CHECKs (naming `_class_name` and the value) a missing or other class.
std::unique_ptr<Sampler> make_sampler_from_class(const nlohmann::json& scheduler_config);

}  // namespace lookahead::model::sched
