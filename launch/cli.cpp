// Shared command-line options and their validation.
#include "launch/cli.h"

#include <boost/program_options/parsers.hpp>
#include <boost/program_options/value_semantic.hpp>

#include <stdexcept>

#include "model/io/weight_shapes.h"

namespace po = boost::program_options;

namespace lookahead::launch {

po::options_description world_options() {
  po::options_description d("Distributed runtime");
  dist::WorldConfig def;
  d.add_options()
      ("timeout", po::value<double>()->default_value(def.comm.timeout_s),
       "seconds a collective may run before the job ends with a timeout report (0 = never)")
      ("verify-collectives", po::value<bool>()->default_value(def.comm.verify_signatures),
       "compare each collective's op, dtype and sizes across ranks before running it")
      ("flight-recorder", po::value<size_t>()->default_value(def.comm.flight_recorder_size),
       "collectives kept per rank for timeout reports")
      ("abort-grace", po::value<double>()->default_value(def.abort_grace_s),
       "seconds a rank gets to report a timeout before the job is aborted")
      ("bind-device", po::value<bool>()->default_value(def.bind_device),
       "bind each rank to cuda:(local rank) when GPUs are present");
  return d;
}

dist::WorldConfig world_config(const po::variables_map& vm) {
  dist::WorldConfig c;
  c.comm.timeout_s = vm["timeout"].as<double>();
  c.comm.verify_signatures = vm["verify-collectives"].as<bool>();
  c.comm.flight_recorder_size = vm["flight-recorder"].as<size_t>();
  c.abort_grace_s = vm["abort-grace"].as<double>();
  c.bind_device = vm["bind-device"].as<bool>();
  if (c.comm.timeout_s < 0) throw std::invalid_argument("--timeout must be >= 0 (0 disables it)");
  if (c.comm.flight_recorder_size == 0) throw std::invalid_argument("--flight-recorder must be >= 1");
  if (c.abort_grace_s < 0) throw std::invalid_argument("--abort-grace must be >= 0");
  return c;
}

po::variables_map parse(const std::vector<std::string>& args, const po::options_description& desc) {
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(desc).run(), vm);
  po::notify(vm);
  return vm;
}

std::string shape_str(const std::vector<int64_t>& shape) { return model::io::shape_text(shape); }

}  // namespace lookahead::launch
