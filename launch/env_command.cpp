// `lookahead env`: what every rank sees, gathered and printed by rank 0.
#include <torch/cuda.h>
#include <torch/version.h>

#include <cstdio>
#include <iostream>

#include "common/h5_handle.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "lookahead/build_config.h"
#if LA_HAVE_NCCL
#include "dist/nccl_communicator.h"
#endif

namespace lookahead::launch {

int run_env(dist::World& world, const std::vector<std::string>& args) {
  (void)parse(args, boost::program_options::options_description());  // rejects stray flags

  constexpr int64_t kLine = 256;
  char mine[kLine] = {0};
  std::snprintf(mine, sizeof mine, "rank %d/%d  local %d/%d  node %d/%d  host %s  device %s", world.rank(),
                world.size(), world.local_rank(), world.local_size(), world.node_rank(), world.num_nodes(),
                world.hostname().c_str(), world.device().str().c_str());
  at::Tensor line = at::from_blob(mine, {kLine}, at::kByte).clone();
  at::Tensor all = at::empty({world.size() * kLine}, at::kByte);
  world.comm()->all_gather(all, line)->wait();
  if (!world.is_root()) return kExitOk;

  std::cout << "lookahead " << LA_VERSION << "\n"
            << "  torch    " << TORCH_VERSION << (LA_TORCH_HAS_CUDA ? " (CUDA " LA_TORCH_CUDA_VERSION " build)" : " (CPU build)")
            << "\n"
            << "  CUDA     " << (torch::cuda::is_available() ? "available, " + std::to_string(torch::cuda::device_count()) + " device(s)" : std::string("no device")) << "\n"
#if LA_HAVE_NCCL
            << "  NCCL     " << dist::nccl_version() << "\n"
#else
            << "  NCCL     not built\n"
#endif
            << "  MPI      " << world.mpi_version() << "\n"
            << "  HDF5     " << common::hdf5_version() << "\n"
            << "  world    " << world.size() << " rank(s) on " << world.num_nodes() << " node(s)\n";
  auto* bytes = all.data_ptr<uint8_t>();
  for (int r = 0; r < world.size(); ++r)
    std::cout << "  " << reinterpret_cast<const char*>(bytes + r * kLine) << "\n";
  std::cout.flush();
  return kExitOk;
}

}  // namespace lookahead::launch
