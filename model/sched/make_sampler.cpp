// make_sampler: a sampler name (or the config's `_class_name`) and a scheduler config to the
// concrete sampler.
#include "model/sched/make_sampler.h"

#include <nlohmann/json.hpp>

#include <c10/util/Exception.h>

#include <array>
#include <string>
#include <utility>

#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/euler_ancestral.h"
#include "model/sched/lcm_sampler.h"

namespace lookahead::model::sched {

namespace {

// The diffusers scheduler classes make_sampler_from_class builds, by `_class_name`.
constexpr std::array<std::pair<std::string_view, SamplerKind>, 5> kSchedulerClasses{{
    {"EulerAncestralDiscreteScheduler", SamplerKind::kEulerAncestral},
    {"EulerDiscreteScheduler", SamplerKind::kEuler},
    {"DDIMScheduler", SamplerKind::kDdim},
    {"DPMSolverMultistepScheduler", SamplerKind::kDpmSolver},
    {"LCMScheduler", SamplerKind::kLcm},
}};

std::string supported_classes() {
  std::string out;
  for (const auto& [name, kind] : kSchedulerClasses) {
    out += (out.empty() ? "" : ", ") + std::string(name);
  }
  return out;
}

}  // namespace

SamplerKind parse_sampler_kind(std::string_view name) {
  if (name == "euler") return SamplerKind::kEuler;
  if (name == "euler_ancestral" || name == "euler_a") return SamplerKind::kEulerAncestral;
  if (name == "ddim") return SamplerKind::kDdim;
  if (name == "dpm_solver" || name == "dpm++" || name == "dpmsolver++") return SamplerKind::kDpmSolver;
  if (name == "lcm") return SamplerKind::kLcm;
  TORCH_CHECK(false, "unknown sampler '", std::string(name),
              "' (expected euler, euler_ancestral, ddim, dpm_solver or lcm)");
}

std::unique_ptr<Sampler> make_sampler(SamplerKind kind, const nlohmann::json& scheduler_config) {
  switch (kind) {
    case SamplerKind::kEuler:
      return std::make_unique<EulerDiscreteSampler>(EulerDiscreteOptions::from_config(scheduler_config));
    case SamplerKind::kDdim:
      return std::make_unique<DdimSampler>(DdimOptions::from_config(scheduler_config));
    case SamplerKind::kDpmSolver:
      return std::make_unique<DpmSolverSampler>(DpmSolverOptions::from_config(scheduler_config));
    case SamplerKind::kLcm:
      return std::make_unique<LcmSampler>(LcmOptions::from_config(scheduler_config));
    case SamplerKind::kEulerAncestral:
      return std::make_unique<EulerAncestralSampler>(EulerAncestralOptions::from_config(scheduler_config));
  }
  TORCH_CHECK(false, "make_sampler: unknown sampler kind");
}

std::unique_ptr<Sampler> make_sampler_from_class(const nlohmann::json& scheduler_config) {
  const auto it = scheduler_config.is_object() ? scheduler_config.find("_class_name") : scheduler_config.end();
  TORCH_CHECK(it != scheduler_config.end() && !it->is_null(),
              "scheduler config: _class_name is missing, so the scheduler class is unknown (supported: ",
              supported_classes(), ")");
  TORCH_CHECK(it->is_string(), "scheduler config: _class_name = ", it->dump(),
              " is not a class name (supported: ", supported_classes(), ")");
  const std::string class_name = it->get<std::string>();
  for (const auto& [name, kind] : kSchedulerClasses) {
    if (class_name == name) {
      return make_sampler(kind, scheduler_config);
    }
  }
  TORCH_CHECK(false, "scheduler config: _class_name = \"", class_name,
              "\" is not supported (supported: ", supported_classes(), ")");
}

}  // namespace lookahead::model::sched
