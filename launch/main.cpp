// Entry point of `lookahead`: parses the subcommand, starts the World, runs, and turns errors into
// exit codes. The only place that reads argv; a failure on one rank ends the whole job.
#include <boost/program_options/errors.hpp>
#include <boost/program_options/parsers.hpp>
#include <boost/program_options/variables_map.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "launch/cli.h"
#include "launch/commands.h"
#include "lookahead/build_config.h"

namespace po = boost::program_options;
using namespace lookahead;

namespace {

using Runner = int (*)(dist::World&, const std::vector<std::string>&);

/// Every subcommand: its name, what runs it (null: answered without a World), whether it prints its
/// own --help, and its line in the usage text.
struct Command {
  const char* name;
  Runner runner;
  bool own_help;
  const char* summary;
};

constexpr Command kCommands[] = {
    {"version", nullptr, false, "print the version of Lookahead and of the libraries it was built with"},
    {"env", launch::run_env, false, "print ranks, nodes, devices and library versions as every rank sees them"},
    {"model", launch::run_model_command, false,
     "`model run --model unet --config C --weights W --inputs IN --out OUT [--lora F\n"
     "--lora-scale S]` runs a network on named tensors; `model inspect FILE` describes\n"
     "a weight file and the supported network it matches; `model tokenize --sdxl-folder D\n"
     "--prompt P` shows the ids, tokens and truncation point of both SDXL tokenizers;\n"
     "`model init --preset sdxl|sdxl-turbo|tiny --out DIR` writes random weights in every\n"
     "public layout the preset names, and DIR/lookahead.ini pointing at them"},
    {"data", launch::run_data_command, true,
     "`data pack --images DIR --meta FILE.jsonl --out FILE.h5` packs images + metadata;\n"
     "`data synth --out FILE.h5 --identities K --per-identity M --size S` writes a\n"
     "synthetic set; `data info FILE.h5 [--check-records]` describes (and checks) one;\n"
     "`data ffhq` prepares the FFHQ evaluation set; `data encode` adds precomputed latents,\n"
     "prompt embeddings and CLIP features"},
    {"train", launch::run_train, true,
     "`train --config FILE.ini [--section.key=value ...] [--dry-run]` trains the\n"
     "LCM-Lookahead encoder (launch/configs/*.ini; `train --help` lists every key)"},
    {"export", launch::run_export, true,
     "`export --config FILE.ini [--checkpoint PATH|latest] [--out DIR]` writes the\n"
     "trained encoder of a checkpoint as safetensors (IP-Adapter + KV encoder)"},
    {"eval", launch::run_eval, true,
     "`eval --config FILE.ini --checkpoint PATH|latest --eval-set FILE.h5 --prompts FILE.txt\n"
     "--out DIR` samples with the trained encoder, measures ID similarity and CLIP score and\n"
     "writes metrics.json, the images and report.html (several --checkpoint: a comparison);\n"
     "`eval report --runs DIR ... --out DIR` combines finished runs into one report"},
    {"help", nullptr, false, "this text; `lookahead <command> --help` describes a command's options"},
};

const Command* find_command(const std::string& name) {
  for (const Command& c : kCommands)
    if (name == c.name) return &c;
  return nullptr;
}

void print_usage(std::ostream& out) {
  out << "Usage: lookahead <command> [options]\n"
         "       mpirun -np N lookahead <command> [options]\n\n"
         "Commands:\n";
  for (const Command& c : kCommands) {
    out << "  " << c.name << std::string(11 - std::string(c.name).size(), ' ');
    for (const char* p = c.summary; *p; ++p) {
      out << *p;
      if (*p == '\n') out << std::string(13, ' ');
    }
    out << "\n";
  }
  out << "\n" << launch::world_options() << "\n";
}

int run_command(const std::string& command, std::vector<std::string> args, int* argc, char*** argv) {
  if (command == "version") {
    std::cout << "lookahead " << LA_VERSION << " (torch " << LA_TORCH_VERSION
              << (LA_TORCH_HAS_CUDA ? ", CUDA " LA_TORCH_CUDA_VERSION : ", CPU") << (LA_HAVE_NCCL ? ", NCCL" : "")
              << ")\n";
    return launch::kExitOk;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    print_usage(std::cout);
    return launch::kExitOk;
  }
  const Command* cmd = find_command(command);
  if (!cmd || !cmd->runner) {
    std::cerr << "lookahead: unknown command '" << command << "'\n\n";
    print_usage(std::cerr);
    return launch::kExitUsage;
  }
  const Runner runner = cmd->runner;
  // World options are shared by every command: split them off before the command parses the rest.
  po::options_description world_desc = launch::world_options();
  po::parsed_options parsed = po::command_line_parser(args).options(world_desc).allow_unregistered().run();
  // Some commands print their own option reference.
  for (const auto& opt : parsed.options)
    if (cmd->own_help) break;
    else if (opt.string_key == "help" || (!opt.original_tokens.empty() && opt.original_tokens[0] == "--help")) {
      print_usage(std::cout);
      return launch::kExitOk;
    }
  po::variables_map vm;
  po::store(parsed, vm);
  po::notify(vm);
  dist::WorldConfig config = launch::world_config(vm);
  std::vector<std::string> rest = po::collect_unrecognized(parsed.options, po::include_positional);

  dist::World world(config, argc, argv);
  try {
    world.check_consistent("the command line of `lookahead " + command + "`",
                           dist::hash_string(command + "\x1f" + [&] {
                             std::string joined;
                             for (const auto& a : args) joined += a + "\x1f";
                             return joined;
                           }()));
    return runner(world, rest);
  } catch (const dist::DistError& e) {
    world.abort(launch::kExitDistributed, e.what());
  } catch (const po::error& e) {
    world.abort(launch::kExitUsage, std::string("lookahead ") + command + ": " + e.what());
  } catch (const std::invalid_argument& e) {
    world.abort(launch::kExitUsage, std::string("lookahead ") + command + ": " + e.what());
  } catch (const c10::Error& e) {
    world.abort(launch::kExitError, e.what_without_backtrace());
  } catch (const std::exception& e) {
    // Other ranks may be waiting in a collective for this one: end the job rather than hang it.
    world.abort(launch::kExitError, e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    print_usage(std::cerr);
    return launch::kExitUsage;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return run_command(argv[1], std::move(args), &argc, &argv);
  } catch (const po::error& e) {
    std::cerr << "lookahead " << argv[1] << ": " << e.what() << "\n";
    return launch::kExitUsage;
  } catch (const std::invalid_argument& e) {
    std::cerr << "lookahead " << argv[1] << ": " << e.what() << "\n";
    return launch::kExitUsage;
  } catch (const std::exception& e) {
    std::cerr << "lookahead " << argv[1] << ": error: " << e.what() << "\n";
    return launch::kExitError;
  }
}
