// Collectives of both backends under mpiexec -n 1..4: the MPI communicator on CPU tensors and the
// NCCL communicator on CUDA tensors (skipped where there is no GPU). Expected values are computed
// from rank and size (arange-style), so a chunk in the wrong place or a missing rank fails; sizes
// are odd so that 3 ranks exercise uneven arithmetic.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include "dist/mpi_communicator.h"
#include "tests/test_main.h"

namespace lookahead::dist {
namespace {

using test::world;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kDouble, at::kHalf, at::kBFloat16,
                                             at::kInt,   at::kLong,   at::kByte};

at::Tensor arange(int64_t n, at::ScalarType dtype, int64_t start = 0) {
  return at::arange(start, start + n, at::TensorOptions().dtype(at::kDouble)).to(dtype);
}

// Parameter: the device type whose backend is tested (CPU -> MPI, CUDA -> NCCL).
class Collectives : public testing::TestWithParam<c10::DeviceType> {
 protected:
  void SetUp() override {
    if (GetParam() == c10::kCUDA && !world().device().is_cuda())
      GTEST_SKIP() << "no GPU bound to this rank: the NCCL backend is tested on GPU machines";
    if (GetParam() == c10::kCUDA && world().local_size() > static_cast<int>(torch::cuda::device_count()))
      GTEST_SKIP() << "NCCL needs one GPU per rank; " << world().local_size() << " ranks share "
                   << torch::cuda::device_count() << " GPU(s) on this node";
  }
  CommunicatorPtr comm() const { return world().comm_for(device()); }
  c10::Device device() const { return GetParam() == c10::kCUDA ? world().device() : c10::Device(c10::kCPU); }
  at::Tensor on_device(const at::Tensor& t) const { return t.to(device()); }
};

// Exact comparison after the single rounding both sides share (values are small integers).
void expect_equal(const at::Tensor& got_any, const at::Tensor& want, const std::string& what) {
  at::Tensor got = got_any.cpu();
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  auto diff = (got.to(at::kDouble) - want.to(at::kDouble)).abs();
  EXPECT_EQ(diff.max().item<double>(), 0.0) << what << "\n got " << got << "\n want " << want;
}

/// What reducing (q + 1) * j over ranks q = 0..n-1 gives with `op` (uint8 wraps).
at::Tensor expected_reduction(ReduceOp op, const at::Tensor& j, int n, at::ScalarType dtype) {
  at::Tensor want;
  switch (op) {
    case ReduceOp::kSum: want = j * (n * (n + 1) / 2); break;
    case ReduceOp::kAvg: want = j * (n * (n + 1) / 2) / n; break;
    case ReduceOp::kMax: want = j * n; break;
    case ReduceOp::kMin: want = j; break;
  }
  return dtype == at::kByte ? want.remainder(256) : want;
}

TEST_P(Collectives, AllGatherPlacesEveryRanksChunk) {
  auto comm = this->comm();
  const int r = comm->rank(), n = comm->size();
  for (auto dtype : kDtypes) {
    const int64_t chunk = 7;
    at::Tensor in = on_device(arange(chunk, dtype, r * chunk));
    at::Tensor out = at::full({n * chunk}, -1, at::TensorOptions().dtype(dtype).device(device()));
    auto work = comm->all_gather(out, in);
    work->synchronize();
    EXPECT_EQ(work->state(), WorkState::kDone);
    EXPECT_EQ(work->bytes(), static_cast<int64_t>(out.nbytes()));
    expect_equal(out, arange(n * chunk, dtype), std::string("all_gather ") + dtype_name(dtype));
  }
}

TEST_P(Collectives, AllGatherInPlace) {
  auto comm = this->comm();
  const int r = comm->rank(), n = comm->size();
  const int64_t chunk = 5;
  at::Tensor out = on_device(at::zeros({n * chunk}, at::kFloat));
  at::Tensor mine = out.narrow(0, r * chunk, chunk);
  mine.copy_(on_device(arange(chunk, at::kFloat, r * chunk)));
  comm->all_gather(out, mine)->wait();
  expect_equal(out, arange(n * chunk, at::kFloat), "in-place all_gather");
}

TEST_P(Collectives, ReduceScatterAllOps) {
  auto comm = this->comm();
  const int r = comm->rank(), n = comm->size();
  const int64_t chunk = 7;
  for (auto dtype : kDtypes) {
    for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      if (op == ReduceOp::kAvg && !at::isFloatingType(dtype)) continue;
      // rank q contributes (q + 1) * j at global index j
      at::Tensor in = on_device((arange(n * chunk, at::kDouble) * (r + 1)).to(dtype));
      at::Tensor out = at::empty({chunk}, at::TensorOptions().dtype(dtype).device(device()));
      comm->reduce_scatter(out, in, op)->wait();
      at::Tensor j = arange(chunk, at::kDouble, r * chunk);
      at::Tensor want = expected_reduction(op, j, n, dtype);  // uint8 wraps
      // Half types: MPI reduces in float32 and rounds once; NCCL's partial sums of these small
      // integers are exact in the half types too, so both match the once-rounded reference.
      expect_equal(out, want.to(at::kFloat).to(dtype),
                   std::string("reduce_scatter ") + to_string(op) + " " + dtype_name(dtype));
    }
  }
}

TEST_P(Collectives, LargeBuffersAllOpsInPlaceAndNot) {
  // Chunks of 256 KiB and more take the MPI communicator's own ring (polled, sleeping between
  // tests); odd sizes make every rank's chunk start unaligned.
  auto comm = this->comm();
  const int r = comm->rank(), n = comm->size();
  const int64_t chunk = 300'001;
  for (auto dtype : {at::kFloat, at::kDouble, at::kBFloat16, at::kByte}) {
    const std::string name = dtype_name(dtype);
    at::Tensor all = (arange(n * chunk, at::kDouble).remainder(50)).to(dtype);  // [n * chunk]
    at::Tensor out = at::zeros({n * chunk}, at::TensorOptions().dtype(dtype).device(device()));
    comm->all_gather(out, on_device(all.narrow(0, r * chunk, chunk).clone()))->wait();
    expect_equal(out, all, "large all_gather " + name);
    at::Tensor in_place = at::zeros({n * chunk}, at::TensorOptions().dtype(dtype).device(device()));
    in_place.narrow(0, r * chunk, chunk).copy_(on_device(all.narrow(0, r * chunk, chunk)));
    comm->all_gather(in_place, in_place.narrow(0, r * chunk, chunk))->wait();
    expect_equal(in_place, all, "large in-place all_gather " + name);
    for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      if (op == ReduceOp::kAvg && !at::isFloatingType(dtype)) continue;
      at::Tensor v = arange(n * chunk, at::kDouble).remainder(50);  // rank q contributes (q + 1) * v
      at::Tensor in = on_device((v * (r + 1)).to(dtype));
      at::Tensor got = at::empty({chunk}, at::TensorOptions().dtype(dtype).device(device()));
      comm->reduce_scatter(got, in, op)->wait();
      at::Tensor j = v.narrow(0, r * chunk, chunk);
      at::Tensor want = expected_reduction(op, j, n, dtype);
      // Exact partial sums, one rounding at the end (bf16 is reduced in float32).
      expect_equal(got, want.to(at::kFloat).to(dtype),
                   std::string("large reduce_scatter ") + to_string(op) + " " + name);
    }
  }
}

TEST_P(Collectives, AllReduceAllOpsOddSize) {
  auto comm = this->comm();
  const int r = comm->rank(), n = comm->size();
  for (auto dtype : kDtypes) {
    for (auto op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
      if (op == ReduceOp::kAvg && !at::isFloatingType(dtype)) continue;
      at::Tensor t = on_device((arange(13, at::kDouble) * (r + 1)).to(dtype).reshape({13, 1}));
      comm->all_reduce(t, op)->wait();
      at::Tensor j = arange(13, at::kDouble).reshape({13, 1});
      at::Tensor want = op == ReduceOp::kSum   ? j * (n * (n + 1) / 2)
                        : op == ReduceOp::kAvg ? j * (n * (n + 1) / 2) / n
                        : op == ReduceOp::kMax ? j * n
                                               : j;
      expect_equal(t, want.to(at::kFloat).to(dtype),
                   std::string("all_reduce ") + to_string(op) + " " + dtype_name(dtype));
    }
  }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  auto comm = this->comm();
  for (int root = 0; root < comm->size(); ++root) {
    at::Tensor t =
        on_device(comm->rank() == root ? arange(9, at::kBFloat16, 10 * root) : at::zeros({9}, at::kBFloat16));
    comm->broadcast(t, root)->wait();
    expect_equal(t, arange(9, at::kBFloat16, 10 * root), "broadcast from " + std::to_string(root));
  }
}

TEST_P(Collectives, EmptyTensorsAndBarrier) {
  auto comm = this->comm();
  at::Tensor in = on_device(at::empty({0}, at::kFloat));
  at::Tensor out = on_device(at::empty({0}, at::kFloat));
  comm->all_gather(out, in)->wait();
  comm->all_reduce(in)->wait();
  auto b = comm->barrier();
  b->synchronize();
  EXPECT_EQ(b->state(), WorkState::kDone);
}

TEST_P(Collectives, ManyInFlightCompleteInIssueOrder) {
  auto comm = this->comm();
  const int n = comm->size();
  std::vector<at::Tensor> ts;
  std::vector<WorkHandle> works;
  for (int i = 0; i < 12; ++i) {
    ts.push_back(on_device(at::full({1000 + i}, static_cast<double>(i + comm->rank()), at::kDouble)));
    works.push_back(comm->all_reduce(ts.back()));
  }
  wait_all(works);
  for (int i = 0; i < 12; ++i) {
    double want = static_cast<double>(i) * n + n * (n - 1) / 2.0;
    EXPECT_EQ(ts[i].min().item<double>(), want) << i;
    EXPECT_EQ(ts[i].max().item<double>(), want) << i;
    if (i > 0 && GetParam() == c10::kCPU) {
      EXPECT_GE(works[i]->start_time(), works[i - 1]->end_time());  // one MPI queue, FIFO
    }
  }
}

TEST_P(Collectives, CommunicationProgressesWhileTheCallerComputes) {
  // The caller does not call into the communicator between issue and wait: if the collective
  // completes anyway, the communication thread (MPI) or the GPU (NCCL) drove it.
  auto comm = this->comm();
  at::Tensor t = on_device(at::ones({1 << 16}, at::kFloat));
  auto work = comm->all_reduce(t);
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (!work->is_done() && Clock::now() < deadline) {
    volatile double sink = at::randn({64, 64}).sum().item<double>();
    (void)sink;
  }
  EXPECT_EQ(work->state(), WorkState::kDone);
  work->synchronize();
  EXPECT_EQ(t[0].item<float>(), static_cast<float>(comm->size()));
}

TEST_P(Collectives, RecordedInTheFlightRecorder) {
  auto comm = this->comm();
  uint64_t before = comm->issued();
  at::Tensor t = on_device(at::ones({3}, at::kLong));
  comm->all_reduce(t)->synchronize();
  auto entries = world().services()->recorder->entries();
  ASSERT_FALSE(entries.empty());
  const auto& last = entries.back()->info();
  EXPECT_EQ(last.seq, before);
  EXPECT_EQ(last.op, OpType::kAllReduce);
  EXPECT_EQ(last.bytes, 24);
  EXPECT_EQ(last.comm_name, "world");
  EXPECT_EQ(last.backend, comm->backend());
  EXPECT_EQ(entries.back()->state(), WorkState::kDone);
}

INSTANTIATE_TEST_SUITE_P(Backends, Collectives, testing::Values(c10::kCPU, c10::kCUDA),
                         [](const testing::TestParamInfo<c10::DeviceType>& info) {
                           return info.param == c10::kCUDA ? std::string("nccl") : std::string("mpi");
                         });

// ---- argument errors: caught on the calling rank before anything is sent ------------------------

template <typename F>
void expect_dist_error(F&& f, ErrorKind kind, const std::string& fragment) {
  try {
    f();
    ADD_FAILURE() << "expected DistError containing '" << fragment << "'";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank " + std::to_string(world().rank())), std::string::npos) << e.what();
  }
}

TEST(CollectiveArguments, RejectedWithAClearMessage) {
  auto comm = world().comm();
  const int n = comm->size();
  uint64_t issued = comm->issued();
  at::Tensor m = at::ones({4, 6});
  expect_dist_error([&] { comm->all_reduce(m.t()); }, ErrorKind::kInvalidArgument, "must be contiguous");
  expect_dist_error([&] { comm->all_gather(at::empty({n * 4 + 1}), at::ones({4})); }, ErrorKind::kInvalidArgument,
                    "expected size");
  expect_dist_error([&] { comm->reduce_scatter(at::empty({3}), at::ones({3 * n + 1})); },
                    ErrorKind::kInvalidArgument, "pad the input");
  expect_dist_error([&] { comm->all_gather(at::empty({n * 4}, at::kDouble), at::ones({4})); },
                    ErrorKind::kInvalidArgument, "dtypes differ");
  expect_dist_error([&] { comm->all_reduce(at::ones({4}, at::kLong), ReduceOp::kAvg); },
                    ErrorKind::kInvalidArgument, "avg needs a floating-point dtype");
  expect_dist_error([&] { comm->broadcast(at::ones({4}), n); }, ErrorKind::kInvalidArgument, "root");
  expect_dist_error([&] { comm->all_reduce(at::empty({4}, at::TensorOptions().device(at::kMeta))); },
                    ErrorKind::kInvalidArgument, "moves CPU tensors");
  expect_dist_error([&] { comm->all_reduce(at::Tensor()); }, ErrorKind::kInvalidArgument, "undefined");
  at::Tensor buf = at::zeros({4 * n});
  expect_dist_error([&] { comm->reduce_scatter(buf.narrow(0, 0, 4), buf); }, ErrorKind::kInvalidArgument,
                    "overlaps");
  if (n > 1) {
    at::Tensor out = at::zeros({4 * n});
    int other = (comm->rank() + 1) % n;
    expect_dist_error([&] { comm->all_gather(out, out.narrow(0, other * 4, 4)); }, ErrorKind::kInvalidArgument,
                      "not this rank's chunk");
  }
  EXPECT_EQ(comm->issued(), issued);  // nothing reached the wire
}

TEST(HostValues, ReducedOverTheRanks) {
  auto comm = world().comm();
  const int r = comm->rank(), n = comm->size();
  // Counts beyond 32 bits stay exact, losses average, flags take the maximum.
  const double big = static_cast<double>(int64_t{1} << 40);
  const std::vector<double> sum = all_reduce_values(*comm, {1.0, big + r, 0.25 * r}, ReduceOp::kSum);
  ASSERT_EQ(sum.size(), 3u);
  EXPECT_EQ(sum[0], n);
  EXPECT_EQ(sum[1], n * big + n * (n - 1) / 2.0);
  EXPECT_DOUBLE_EQ(sum[2], 0.25 * n * (n - 1) / 2.0);
  EXPECT_DOUBLE_EQ(all_reduce_values(*comm, {2.0 * r}, ReduceOp::kAvg)[0], n - 1.0);
  EXPECT_EQ(all_reduce_values(*comm, {r == n - 1 ? 1.0 : 0.0}, ReduceOp::kMax)[0], 1.0);
  EXPECT_TRUE(all_reduce_values(*comm, {}, ReduceOp::kSum).empty());
}

std::string string_of_rank(int r) {
  std::string s(static_cast<size_t>(3 * r), static_cast<char>('a' + r));
  if (r % 2 == 1) s += std::string("\0tail", 5);  // NULs travel too
  return s;
}

TEST(HostValues, StringsGatheredAndBroadcast) {
  auto comm = world().comm();
  const int r = comm->rank(), n = comm->size();
  const std::vector<std::string> all = all_gather_strings(*comm, string_of_rank(r));
  ASSERT_EQ(all.size(), static_cast<size_t>(n));
  for (int q = 0; q < n; ++q) EXPECT_EQ(all[static_cast<size_t>(q)], string_of_rank(q)) << "rank " << q << "'s string";
  EXPECT_EQ(all_gather_strings(*comm, ""), std::vector<std::string>(static_cast<size_t>(n)));
  for (int root = 0; root < n; ++root) {
    std::string text = r == root ? string_of_rank(root) + "from the root" : "stale text of rank " + std::to_string(r);
    broadcast_string(*comm, root, text);
    EXPECT_EQ(text, string_of_rank(root) + "from the root") << "root " << root;
  }
  std::string empty = r == 0 ? "" : "not empty";
  broadcast_string(*comm, 0, empty);
  EXPECT_EQ(empty, "");
}

TEST(CollectiveArguments, RankDependentShapesAreAMismatchNotAHang) {
  auto comm = world().comm();
  const int r = comm->rank(), n = comm->size();
  if (n < 2) GTEST_SKIP() << "needs 2+ ranks: a mismatch is between ranks";
  at::Tensor t = at::ones({4 + (r == n - 1 ? 1 : 0)});
  try {
    comm->all_reduce(t)->wait();
    ADD_FAILURE() << "a size mismatch must fail";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
    std::string msg = e.what();
    EXPECT_NE(msg.find("rank " + std::to_string(n - 1) + ": #"), std::string::npos) << msg;
    EXPECT_NE(msg.find("in 5 out 5 sum   <-- differs from rank 0"), std::string::npos) << msg;
  }
  // Different ops with the same sizes are caught too.
  at::Tensor u = at::ones({6});
  try {
    (r == 0 ? comm->broadcast(u, 0) : comm->all_reduce(u))->wait();
    ADD_FAILURE() << "an op mismatch must fail";
  } catch (const DistError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kMismatch);
    EXPECT_NE(std::string(e.what()).find("broadcast"), std::string::npos) << e.what();
  }
  // The communicator stays usable: the check ran before any payload moved.
  at::Tensor ok = at::full({4}, static_cast<float>(r));
  comm->all_reduce(ok)->wait();
  EXPECT_EQ(ok[0].item<float>(), static_cast<float>(n * (n - 1)) / 2.0F);
}

// ---- sub-communicators -------------------------------------------------------------------------

TEST(Split, ColorsAndKeysOrderTheSubgroups) {
  auto comm = world().comm();
  const int r = comm->rank(), n = comm->size();
  // Even and odd ranks; within each, reverse order through the key.
  auto sub = comm->split(r % 2, -r, r % 2 ? "odd" : "even");
  int members = (n + (r % 2 ? 0 : 1)) / 2;
  ASSERT_EQ(sub->size(), members);
  EXPECT_EQ(sub->name(), r % 2 ? "odd" : "even");
  at::Tensor mine = at::full({1}, static_cast<int64_t>(r), at::kLong);
  at::Tensor all = at::empty({members}, at::kLong);
  sub->all_gather(all, mine)->wait();
  // Highest world rank of my parity first.
  int top = (n - 1) - ((n - 1 - r) % 2);
  for (int i = 0; i < members; ++i) EXPECT_EQ(all[i].item<int64_t>(), top - 2 * i) << i;
  EXPECT_EQ(all[sub->rank()].item<int64_t>(), r);
  // Collectives on the sub-communicator and the parent interleave freely.
  at::Tensor s = at::ones({5});
  auto w1 = sub->all_reduce(s);
  at::Tensor p = at::ones({5});
  auto w2 = comm->all_reduce(p);
  w1->wait();
  w2->wait();
  EXPECT_EQ(s[0].item<float>(), static_cast<float>(members));
  EXPECT_EQ(p[0].item<float>(), static_cast<float>(n));
}

TEST(Split, NodeCommunicatorHoldsTheLocalRanks) {
  auto node = world().node_comm();
  EXPECT_EQ(node->size(), world().local_size());
  EXPECT_EQ(node->rank(), world().local_rank());
  at::Tensor one = at::ones({1});
  node->all_reduce(one)->wait();
  EXPECT_EQ(one.item<float>(), static_cast<float>(world().local_size()));
}

}  // namespace
}  // namespace lookahead::dist
