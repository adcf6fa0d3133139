// make_sampler: a sampler name and a scheduler config to the concrete sampler.
#include "model/sched/make_sampler.h"

#include <nlohmann/json.hpp>

#include <c10/util/Exception.h>

#include <string>

#include "model/sched/ddim.h"
#include "model/sched/dpm_solver.h"
#include "model/sched/euler.h"
#include "model/sched/lcm_sampler.h"

namespace lookahead::model::sched {

SamplerKind parse_sampler_kind(std::string_view name) {
  if (name == "euler") return SamplerKind::kEuler;
  if (name == "ddim") return SamplerKind::kDdim;
  if (name == "dpm_solver" || name == "dpm++" || name == "dpmsolver++") return SamplerKind::kDpmSolver;
  if (name == "lcm") return SamplerKind::kLcm;
  TORCH_CHECK(false, "unknown sampler '", std::string(name), "' (expected euler, ddim, dpm_solver or lcm)");
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
  }
  TORCH_CHECK(false, "make_sampler: unknown sampler kind");
}

}  // namespace lookahead::model::sched
