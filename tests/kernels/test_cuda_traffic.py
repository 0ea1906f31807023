"""The emulator's counting mode (tests/cuda_emulator/traffic.py) on small kernels written
here, whose sectors per request and bank conflicts are known by hand: what Nsight Compute
would report for them on a GPU."""
import numpy as np
import pytest

import cuda_emulator
from cuda_emulator import compile_module, count_traffic
from cuda_emulator.traffic import combine

pytestmark = [
    pytest.mark.cuda_emulated,
    pytest.mark.skipif(cuda_emulator.compiler_missing_reason() is not None,
                       reason=str(cuda_emulator.compiler_missing_reason())),
]

KERNELS = """
template <typename T>
__global__ void copy(const T* x, T* y, int stride)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[(long long)i * stride];
}

// A square tile through shared memory; PAD 1 shifts each row by one bank.
template <typename T, int PAD>
__global__ void transpose(const T* x, T* y, int n)
{
    __shared__ T tile[32][32 + PAD];
    const int bx = blockIdx.x * 32, by = blockIdx.y * 32;
    const int tx = threadIdx.x, ty = threadIdx.y;
    tile[ty][tx] = x[(by + ty) * n + bx + tx];
    __syncthreads();
    y[(bx + ty) * n + by + tx] = tile[tx][ty];
}

// Without shared memory: the reads are coalesced, the writes 4*n bytes apart.
__global__ void naive_transpose(const float* x, float* y, int n)
{
    const int c = blockIdx.x * 32 + threadIdx.x, r = blockIdx.y * 32 + threadIdx.y;
    y[c * n + r] = x[r * n + c];
}

// Every lane reads tile[index[lane]] of a 64-element shared tile.
template <typename T>
__global__ void gather_shared(const T* x, const int* index, T* y)
{
    __shared__ T tile[64];
    const int lane = threadIdx.x;
    tile[lane] = x[lane];
    tile[lane + 32] = x[lane + 32];
    __syncthreads();
    y[lane] = tile[index[lane]];
}

// Each lane sums `trips` floats 32 apart (a loop: one request per trip), half the lanes
// only, then all lanes read one shared word (a broadcast) and one global float.
__global__ void loop_and_broadcast(const float* x, float* y, int trips)
{
    __shared__ float one;
    const int lane = threadIdx.x;
    float sum = 0;
    if (lane < 16) {
        for (int k = 0; k < trips; ++k) {
            sum += x[k * 32 + lane];
        }
    }
    if (lane == 0) {
        one = x[0];
    }
    __syncthreads();
    y[lane] = sum + one + x[1];
}
"""
NAMES = ["copy<float>", "copy<double>", "transpose<float, 0>", "transpose<float, 1>",
         "transpose<double, 0>", "transpose<double, 1>", "naive_transpose", "loop_and_broadcast",
         "gather_shared<float>", "gather_shared<double>"]


@pytest.fixture(scope="module")
def module():
    return compile_module(KERNELS, NAMES, "traffic.cu")


def counted(kernel, grid, block, args):
    with count_traffic() as launches:
        kernel(grid, block, args)
    (launch,) = launches
    return launch


def only(launch, kind):
    (instruction,) = [i for i in launch.instructions if i.kind == kind]
    return instruction


@pytest.mark.parametrize("dtype, sectors", [(np.float32, 4), (np.float64, 8)])
def test_a_coalesced_copy_touches_the_fewest_sectors(module, dtype, sectors):
    n = 4 * 64
    x, y = np.arange(n, dtype=dtype), np.zeros(n, dtype)
    launch = counted(module.kernel(f"copy<{'float' if dtype == np.float32 else 'double'}>"),
                     (4,), (64,), (x, y, np.int32(1)))
    np.testing.assert_array_equal(y, x)
    for kind in ("global load", "global store"):
        assert only(launch, kind).requests == n // 32
        assert only(launch, kind).lanes == n
        assert launch.sectors_per_request(kind) == sectors
    assert launch.bytes_moved == launch.compulsory_bytes == 2 * x.nbytes
    assert only(launch, "global load").source == "traffic.cu:6"


@pytest.mark.parametrize("stride, sectors", [(2, 8), (4, 16), (8, 32), (33, 32)])
def test_a_strided_copy_touches_one_sector_per_lane_from_32_bytes_apart(module, stride, sectors):
    x, y = np.arange(64 * stride, dtype=np.float32), np.zeros(64, np.float32)
    launch = counted(module.kernel("copy<float>"), (2,), (32,), (x, y, np.int32(stride)))
    np.testing.assert_array_equal(y, x[::stride])
    assert launch.sectors_per_request("global load") == sectors
    assert launch.sectors_per_request("global store") == 4
    assert launch.bytes_moved == 32 * 2 * (sectors + 4)


def test_sectors_count_from_the_start_of_the_allocation(module):
    """A view one float into its allocation straddles a sector boundary: 5 sectors, as on a GPU,
    wherever numpy happened to place the allocation."""
    memory = np.arange(65, dtype=np.float32)
    y = np.zeros(64, np.float32)
    launch = counted(module.kernel("copy<float>"), (2,), (32,), (memory[1:], y, np.int32(1)))
    assert launch.sectors_per_request("global load") == 5
    assert launch.sectors_per_request("global store") == 4
    assert launch.compulsory_bytes == 32 * (9 + 8)      # floats 1..64: sectors 0..8 of the allocation


@pytest.mark.parametrize("dtype, c_type, words", [(np.float32, "float", 1), (np.float64, "double", 2)])
def test_transposing_through_shared_memory_conflicts_unless_padded(module, dtype, c_type, words):
    n = 64
    x = np.arange(n * n, dtype=dtype).reshape(n, n)
    requests = (n // 32) ** 2 * 32                          # a warp per tile row
    ideal = requests * words                                # 8-byte lanes: two half-warp phases
    for pad, wavefronts in ((0, 32 * requests), (1, ideal)):
        y = np.zeros_like(x)
        launch = counted(module.kernel(f"transpose<{c_type}, {pad}>"), (2, 2), (32, 32),
                         (x, y, np.int32(n)))
        np.testing.assert_array_equal(y, x.T)
        store, load = only(launch, "shared store"), only(launch, "shared load")
        assert (store.requests, store.wavefronts, store.replays) == (requests, ideal, 0)
        # Unpadded, a warp reads a column: 32 lanes in one bank (in each half-warp, 16
        # lanes in one pair of banks). Padded, a column spreads over all banks.
        assert (load.requests, load.wavefronts, load.replays) == (requests, wavefronts, wavefronts - ideal)
        assert launch.bank_conflict_replays == wavefronts - ideal
        for kind in ("global load", "global store"):
            assert launch.sectors_per_request(kind) == 4 * words


def _pairs_swapped():
    """Lane 1 reads element 16 and lane 17 element 0: with 8-byte elements, each half-warp
    then has two lanes in banks 0 and 1 on different words."""
    index = np.arange(32, dtype=np.int32)
    index[1], index[17] = 16, 0
    return index


@pytest.mark.parametrize("c_type, index, wavefronts", [
    ("float", np.arange(32, dtype=np.int32), 1),
    ("float", np.arange(32, dtype=np.int32) * 2, 2),          # even words only: two per bank
    ("float", np.arange(32, dtype=np.int32) % 4, 1),          # 4 words, each a broadcast
    ("float", np.arange(32, dtype=np.int32) % 2 * 32, 2),     # words 0 and 32: one bank
    ("double", np.arange(32, dtype=np.int32), 2),             # two half-warp phases, no conflict
    ("double", _pairs_swapped(), 4),                          # a 2-way conflict in each phase
])
def test_bank_conflicts_of_a_gather_from_shared_memory(module, c_type, index, wavefronts):
    dtype = np.float32 if c_type == "float" else np.float64
    x, y = np.arange(64, dtype=dtype) + 1, np.zeros(32, dtype)
    launch = counted(module.kernel(f"gather_shared<{c_type}>"), (1,), (32,), (x, index, y))
    np.testing.assert_array_equal(y, x[index])
    load = only(launch, "shared load")
    ideal = 1 if c_type == "float" else 2
    assert (load.requests, load.wavefronts, load.replays) == (1, wavefronts, wavefronts - ideal)


def test_a_naive_transpose_writes_a_sector_per_lane(module):
    n = 64
    x, y = np.arange(n * n, dtype=np.float32).reshape(n, n), np.zeros((n, n), np.float32)
    launch = counted(module.kernel("naive_transpose"), (2, 2), (32, 32), (x, y, np.int32(n)))
    np.testing.assert_array_equal(y, x.T)
    assert launch.sectors_per_request("global load") == 4
    assert launch.sectors_per_request("global store") == 32
    assert launch.bytes_moved == 32 * 128 * (4 + 32)
    assert launch.compulsory_bytes == 2 * x.nbytes       # every sector once: a cache would save it


def test_a_loop_trip_is_a_request_and_broadcasts_cost_nothing(module):
    trips = 3
    x, y = np.arange(32 * trips, dtype=np.float32), np.zeros(32, np.float32)
    launch = counted(module.kernel("loop_and_broadcast"), (1,), (32,), (x, y, np.int32(trips)))
    loads = [i for i in launch.instructions if i.kind == "global load"]
    loop = max(loads, key=lambda i: i.requests)
    assert (loop.requests, loop.lanes, loop.sectors) == (trips, 16 * trips, 2 * trips)
    broadcast = [i for i in loads if i.lanes == 32]
    assert len(broadcast) == 1 and broadcast[0].sectors == 1          # x[1] for all 32 lanes
    shared_load = only(launch, "shared load")
    assert (shared_load.requests, shared_load.lanes, shared_load.replays) == (1, 32, 0)
    assert only(launch, "shared store").lanes == 1


def test_counts_do_not_depend_on_the_interleaving(module):
    x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    seen = set()
    for seed in range(4):
        cuda_emulator.set_seed(seed)
        launch = counted(module.kernel("transpose<float, 0>"), (2, 2), (32, 32),
                         (x, np.zeros_like(x), np.int32(64)))
        seen.add(launch.instructions)
    assert len(seen) == 1


def test_only_launches_inside_the_block_are_counted_and_results_are_the_same(module):
    x = np.random.default_rng(0).standard_normal(4096).astype(np.float32).reshape(64, 64)
    plain, counting = np.zeros_like(x), np.zeros_like(x)
    transpose = module.kernel("transpose<float, 0>")
    cuda_emulator.set_seed(1)
    transpose((2, 2), (32, 32), (x, plain, np.int32(64)))
    cuda_emulator.set_seed(1)
    with count_traffic() as launches:
        transpose((2, 2), (32, 32), (x, counting, np.int32(64)))
    transpose((2, 2), (32, 32), (x, plain, np.int32(64)))
    assert len(launches) == 1
    assert plain.tobytes() == counting.tobytes()


def test_combine_adds_launches_of_one_kernel(module):
    copy = module.kernel("copy<float>")
    with count_traffic() as launches:
        for n in (64, 128):
            copy((n // 32,), (32,), (np.ones(n, np.float32), np.zeros(n, np.float32), np.int32(1)))
    total = combine(launches)
    assert total.launches == 2
    assert total.requests("global load") == 6 and total.sectors("global load") == 24
    assert total.bytes_moved == sum(launch.bytes_moved for launch in launches)
    assert "| traffic.cu:6 | global load | 6 | 32.0 | 4.00 |" in total.table()
    with pytest.raises(ValueError, match="launches: expected at least one launch"):
        combine([])
