"""The CUDA emulator itself (tests/cuda_emulator), on tiny kernels written here: it must
catch what a GPU would silently get wrong, and execute warp shuffles and barriers as
CUDA defines them. The kernel sets' own tests run on it through the `cupy-emulated`
param of the `kernels` fixture (conftest.py)."""
import numpy as np
import pytest

import cuda_emulator
from cuda_emulator import EmulatedKernelError, compile_module

pytestmark = [
    pytest.mark.cuda_emulated,
    pytest.mark.skipif(cuda_emulator.compiler_missing_reason() is not None,
                       reason=str(cuda_emulator.compiler_missing_reason())),
]

SEEDS = range(5)  # the checks must not depend on the order the threads happened to run in

REVERSE = """
__global__ void reverse(const float* x, float* y, int n)
{
    __shared__ float tile[64];
    const int i = threadIdx.x;
    tile[i] = x[i];
    BARRIER
    y[i] = tile[n - 1 - i];
}
"""


def kernel(code, name):
    return compile_module(code, [name], "snippet.cu").kernel(name)


def floats(n):
    return np.arange(n, dtype=np.float32)


def test_a_barrier_makes_shared_memory_safe():
    reverse = kernel(REVERSE.replace("BARRIER", "__syncthreads();"), "reverse")
    x, y = floats(64), np.zeros(64, np.float32)
    for seed in SEEDS:
        cuda_emulator.set_seed(seed)
        reverse((1,), (64,), (x, y, np.int32(64)))
        np.testing.assert_array_equal(y, x[::-1])


def test_a_missing_barrier_is_reported_whatever_the_order():
    reverse = kernel(REVERSE.replace("BARRIER", ""), "reverse")
    for seed in SEEDS:
        cuda_emulator.set_seed(seed)
        with pytest.raises(EmulatedKernelError,
                           match=r"snippet.cu:8: reverse, block \(0,0,0\), thread .*: (race: reads byte"
                                 r" \d+ of 'tile' \(__shared__ in reverse\), which thread .* wrote"
                                 r"|reads byte \d+ of 'tile' \(__shared__ in reverse\), which no thread"
                                 r" of this block has written yet)"):
            reverse((1,), (64,), (floats(64), np.zeros(64, np.float32), np.int32(64)))


def test_threads_interleave_differently_with_each_seed():
    """Every thread writes one shared int: the race reported is between the first two
    threads that ran, so different seeds must report different pairs."""
    racy = kernel("""
__global__ void racy(int* out)
{
    __shared__ int last;
    last = threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = last;
}
""", "racy")
    reports = set()
    for seed in range(8):
        cuda_emulator.set_seed(seed)
        with pytest.raises(EmulatedKernelError, match="race: writes byte 0 of 'last'") as error:
            racy((1,), (64,), (np.zeros(64, np.int32),))
        reports.add(str(error.value).split("[")[0])
    assert len(reports) > 1, "the threads ran in the same order for every seed"


@pytest.mark.parametrize("body, access", [
    ("y[i] = x[i + 1];", r"reads 4 bytes .* outside every array it was given: the nearest is"
                         r" 'x' \(argument 0, const float\*, shape \(64,\)\), and this is its byte 256 of 256"),
    ("y[i + 1] = x[i];", r"writes 4 bytes .* outside every array it was given: the nearest is"
                         r" 'y' \(argument 1, float\*, shape \(64,\)\), and this is its byte 256 of 256"),
    ("y[i] = x[i - 1];", r"reads 4 bytes .* its byte -4 of 256"),
    ("const_cast<float*>(x)[i] = 0;", r"writes 4 bytes into 'x' \(argument 0, const float\*.*\), a const input"),
])
def test_out_of_bounds_and_const_writes_are_stopped_before_they_happen(body, access):
    copy = kernel(f"""
__global__ void copy(const float* x, float* y, int n)
{{
    const int i = threadIdx.x;
    if (i < n) {{ {body} }}
}}
""", "copy")
    x = floats(64)
    guard = np.full(65, 7.0, np.float32)          # y is guard[:64]: one float more behind it
    y = guard[:64]
    with pytest.raises(EmulatedKernelError, match=r"snippet.cu:5: copy, block \(0,0,0\), thread \(\d+,0,0\): " + access):
        copy((1,), (64,), (x, y, np.int32(64)))
    assert guard[64] == 7.0 and (x == floats(64)).all(), "the faulty access must not happen"


def test_a_race_in_global_memory_is_reported_across_blocks():
    scatter = kernel("""
__global__ void scatter(const float* x, float* y)
{
    y[threadIdx.x % 8] = x[blockIdx.x * blockDim.x + threadIdx.x];
}
""", "scatter")
    y = np.zeros(8, np.float32)
    scatter((1,), (8,), (floats(8), y))                  # one block: every thread its own y[i]
    np.testing.assert_array_equal(y, floats(8))
    with pytest.raises(EmulatedKernelError, match=r"block \(1,0,0\), thread \((\d),0,0\): race:"
                                                  r" writes byte \d+ of 'y' .* which thread \(\1,0,0\)"
                                                  r" of block \(0,0,0\) wrote \(blocks are never ordered"):
        scatter((2,), (8,), (floats(16), y))
    with pytest.raises(EmulatedKernelError, match=r"block \(0,0,0\), .* race: writes byte \d+ of 'y'"
                                                  r" .* which thread \(\d+,0,0\) of block \(0,0,0\)"
                                                  r" wrote with no __syncthreads\(\) between"):
        scatter((1,), (32,), (floats(32), y))


def test_undefined_behaviour_traps():
    overflow = kernel("""
__global__ void overflow(int* y, int big)
{
    y[threadIdx.x] = big + (int)threadIdx.x;
}
""", "overflow")
    y = np.zeros(4, np.int32)
    overflow((1,), (4,), (y, np.int32(5)))
    np.testing.assert_array_equal(y, [5, 6, 7, 8])
    with pytest.raises(EmulatedKernelError, match=r"snippet.cu:4: overflow, .*undefined behaviour"):
        overflow((1,), (4,), (y, np.int32(2**31 - 2)))


SHUFFLES = """
__global__ void shuffles(const int* x, int* out, int width)
{
    const int t = threadIdx.x;
    const int v = x[t];
    out[0 * 64 + t] = __shfl_sync(0xffffffffu, v, 3, width);
    out[1 * 64 + t] = __shfl_up_sync(0xffffffffu, v, 2, width);
    out[2 * 64 + t] = __shfl_down_sync(0xffffffffu, v, 5, width);
    out[3 * 64 + t] = __shfl_xor_sync(0xffffffffu, v, 6, width);
}
"""


def shuffle_reference(x, width):
    """CUDA's definition, lane by lane: a source outside the lane's segment of `width`
    lanes gives the lane its own value (up/down/xor)."""
    out = np.empty((4, 64), np.int32)
    for t in range(64):
        lane, segment = t % 32, (t % 32) // width * width
        warp = t - lane
        sources = [segment + 3 % width, lane - 2, lane + 5, lane ^ 6]
        for k, s in enumerate(sources):
            inside = segment <= s < segment + width
            out[k, t] = x[warp + s] if inside else x[t]
    return out


@pytest.mark.parametrize("width", [32, 8])
def test_warp_shuffles_exchange_values_as_cuda_defines(width):
    shuffles = kernel(SHUFFLES, "shuffles")
    x = (np.arange(64, dtype=np.int32) * 7 + 1)
    out = np.zeros(4 * 64, np.int32)
    shuffles((1,), (64,), (x, out, np.int32(width)))
    np.testing.assert_array_equal(out.reshape(4, 64), shuffle_reference(x, width))


@pytest.mark.parametrize("body, threads, message", [
    ("if (threadIdx.x < 16) { __syncthreads(); }", 32,
     r"divergent __syncthreads\(\): 16 threads wait at a barrier that 16 threads of the block exited"),
    ("if (threadIdx.x < 16) { __syncthreads(); } else { __syncthreads(); }", 32,
     r"divergent __syncthreads\(\): threads \(0,0,0\) and \(16,0,0\) wait at different barriers"),
    ("v = __shfl_down_sync(0xffffffffu, v, 1);", 16,
     r"snippet.cu:5: .* mask 0xffffffff names lane 16, which does not exist \(16 threads per block\)"),
    ("if (threadIdx.x == 3) { return; } v = __shfl_down_sync(0xffffffffu, v, 1);", 32,
     r"(lane 3, which has exited|exits while lane \d+ waits for it in a warp shuffle)"),
    ("v = __shfl_down_sync(0x0000fffeu, v, 1);", 16,
     r"(mask 0x0000fffe does not name the calling lane 0|lane 15 reads lane 16)"),
])
def test_divergent_barriers_and_bad_shuffle_masks_are_errors(body, threads, message):
    diverge = kernel(f"""
__global__ void diverge(int* out)
{{
    int v = (int)threadIdx.x;
    {body}
    out[threadIdx.x] = v;
}}
""", "diverge")
    for seed in SEEDS:
        cuda_emulator.set_seed(seed)
        with pytest.raises(EmulatedKernelError, match=message):
            diverge((1,), (threads,), (np.zeros(threads, np.int32),))


ARGUMENTS = """
__global__ void scale(const double* x, double* y, long long n, int stride, double factor)
{
    for (long long i = threadIdx.x; i < n; i += stride) { y[i] = factor * x[i]; }
}
"""


def test_arguments_must_have_the_exact_c_types():
    scale = kernel(ARGUMENTS, "scale")
    assert scale.signature == "scale(const double*, double*, long long, int, double)"
    x, y = np.arange(10.0), np.zeros(10)
    scale((1,), (4,), (x, y, np.int64(10), np.int32(4), np.float64(2)))
    np.testing.assert_array_equal(y, 2 * x)
    wrong = [
        ((x, y, np.int64(10), np.int64(4), np.float64(2)),
         TypeError, r"argument 3 \(stride, int\): expected a numpy scalar of dtype int32 .* got np.int64"),
        ((x, y, np.int64(10), 4, np.float64(2)),
         TypeError, r"argument 3 \(stride, int\): .* got int"),
        ((x, y, np.int64(10), np.int32(4), np.float32(2)),
         TypeError, r"argument 4 \(factor, double\): expected a numpy scalar of dtype float64"),
        ((x, np.int64(10), y, np.int32(4), np.float64(2)),                   # pointer <-> size
         TypeError, r"argument 1 \(y, double\*\): expected an array, got int64"),
        ((x.astype(np.float32), y, np.int64(10), np.int32(4), np.float64(2)),
         TypeError, r"argument 0 \(x, const double\*\): expected an array of float64, got float32"),
        ((np.zeros(20)[::2], y, np.int64(10), np.int32(4), np.float64(2)),
         ValueError, r"argument 0 \(x, const double\*\): expected a C-contiguous array"),
        ((x, y, np.int64(10), np.int32(4)),
         TypeError, r"expected 5 arguments scale\(const double\*, double\*, long long, int, double\), got 4"),
        ([x, y, np.int64(10), np.int32(4), np.float64(2)],
         TypeError, r"args: expected a tuple, got list"),
    ]
    for args, error, message in wrong:
        with pytest.raises(error, match=message):
            scale((1,), (4,), args)
    with pytest.raises(EmulatedKernelError, match=r"outside every array .* the nearest is 'y'"):
        scale((1,), (4,), (x, y[:5], np.int64(10), np.int32(4), np.float64(2)))  # size too big


def test_the_launch_geometry_is_checked():
    scale = kernel(ARGUMENTS, "scale")
    args = (np.ones(4), np.zeros(4), np.int64(4), np.int32(1), np.float64(1))
    for grid, block, message in [((1,), (1025,), "at most 1024 threads"),
                                 ((0,), (32,), "grid: expected 1 to 3 positive ints"),
                                 ((1, 1, 1, 1), (32,), "grid: expected 1 to 3 positive ints")]:
        with pytest.raises(ValueError, match=message):
            scale(grid, block, args)


def test_every_load_and_store_of_kernel_code_is_checked():
    relu = kernel("""
__global__ void relu(const float* x, float* y)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    y[i] = x[i] > 0 ? x[i] : 0;
}
""", "relu")
    before = cuda_emulator.access_count()
    relu((3,), (32,), (floats(96) - 50, np.zeros(96, np.float32)))
    assert cuda_emulator.access_count() - before >= 2 * 96


def test_the_stand_in_refuses_host_arrays(emulated_cuda):
    module = emulated_cuda.RawModule(code=ARGUMENTS, options=("-std=c++17",), name_expressions=["scale"])
    scale = module.get_function("scale")
    x, y = emulated_cuda.asarray(np.arange(4.0)), emulated_cuda.zeros(4)
    scale((1,), (4,), (x, y, np.int64(4), np.int32(4), np.float64(3)))
    np.testing.assert_array_equal(y.get(), [0, 3, 6, 9])
    with pytest.raises(TypeError, match="argument 1: a host numpy.ndarray"):
        scale((1,), (4,), (x, np.zeros(4), np.int64(4), np.int32(4), np.float64(3)))
    with pytest.raises(TypeError, match="host numpy.ndarray operand"):
        x + np.ones(4)
