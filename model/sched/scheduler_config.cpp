// scheduler_config.json values through the model's one config reader (model/io/config_json.h).
#include "model/sched/scheduler_config.h"

#include "model/io/config_json.h"

namespace lookahead::model::sched::detail {

void read_key(const nlohmann::json& config, const char* key, double& out) {
  io::read_key(config, key, out, kSchedulerConfig);
}

void read_key(const nlohmann::json& config, const char* key, int64_t& out) {
  io::read_key(config, key, out, kSchedulerConfig, io::WholeFloats::kAccept);
}

void read_key(const nlohmann::json& config, const char* key, bool& out) {
  io::read_key(config, key, out, kSchedulerConfig);
}

void read_key(const nlohmann::json& config, const char* key, std::string& out) {
  io::read_key(config, key, out, kSchedulerConfig);
}

}  // namespace lookahead::model::sched::detail
