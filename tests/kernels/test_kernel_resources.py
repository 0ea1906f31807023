"""Registers, spills, shared memory and H100 occupancy of every CUDA kernel, from NVRTC's
ptxas report (tests/cuda_resources.py): printed as a table on every run, and no kernel may
spill registers to local memory. No GPU is needed; NVRTC 13 comes with the test extra."""
import pytest

import cuda_resources
from cuda_resources import H100, Resources, occupancy, parse_ptxas_log
from tinyalex.kernels.cupy import loader


@pytest.fixture(scope="module")
def resources():
    return cuda_resources.kernel_resources()


@pytest.mark.nvrtc
def test_every_kernel_is_reported_and_none_spills(resources, capsys):
    with capsys.disabled():
        print(f"\nptxas (NVRTC, {' '.join(loader.COMPILE_OPTIONS + cuda_resources.CUPY_ADDED_OPTIONS)}),"
              f" occupancy on an {H100.name} at the launcher's block size:\n"
              + cuda_resources.resource_table(resources))
    expected = {e for file in loader.KERNEL_FILES for e in loader.name_expressions(file)}
    assert set(resources) == expected
    spilled = {name: (r.spill_stores, r.spill_loads) for name, r in resources.items() if r.spills}
    assert not spilled, f"kernels that spill registers (store, load bytes): {spilled}"
    for name, r in resources.items():
        assert 0 < r.registers <= H100.max_registers_per_thread, name
        assert occupancy(r, cuda_resources.launcher_block(name)).blocks_per_sm >= 1, name


SPILLING = """
template <typename T>
__global__ void spills(const T* x, T* y)
{
    T v[48];
    for (int i = 0; i < 48; ++i) { v[i] = x[threadIdx.x * 48 + i]; }
    T s = 0;
    for (int i = 0; i < 48; ++i) { for (int j = 0; j < 48; ++j) { s += v[i] * v[j]; } }
    for (int i = 0; i < 48; ++i) { y[threadIdx.x * 48 + i] = v[i] * s; }
}
"""


@pytest.mark.nvrtc
def test_a_spill_is_seen_in_the_report():
    """Capped at 24 registers (ptxas's floor on sm_90), a kernel that keeps 48 values live must
    spill; uncapped it does not."""
    options = loader.COMPILE_OPTIONS + cuda_resources.CUPY_ADDED_OPTIONS + (cuda_resources.PTXAS_VERBOSE,)
    reports = {}
    for extra in ((), ("--maxrregcount=24",)):
        lowered, _, log = cuda_resources.nvrtc_compile(SPILLING, "spills.cu", options + extra, ["spills<float>"])
        reports[extra] = parse_ptxas_log(log, lowered)["spills<float>"]
    assert reports[()].spills == 0 and reports[()].registers > 24
    capped = reports[("--maxrregcount=24",)]
    assert capped.registers <= 24 and capped.spill_stores > 0 and capped.spill_loads > 0


LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z1kIfEvPKT_' for 'sm_90'
ptxas info    : Function properties for _Z1kIfEvPKT_
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 26 registers, used 1 barriers, 4224 bytes smem
ptxas info    : Compile time = 1.0 ms
ptxas info    : Compiling entry function '_Z1kIdEvPKT_' for 'sm_90'
ptxas info    : Function properties for _Z1kIdEvPKT_
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers
"""


def test_the_ptxas_report_is_read_per_kernel():
    found = parse_ptxas_log(LOG, {"k<float>": "_Z1kIfEvPKT_", "k<double>": "_Z1kIdEvPKT_"})
    assert found["k<float>"] == Resources("k<float>", 26, 8, 12, 16, 4224)
    assert found["k<float>"].spills == 20
    assert found["k<double>"] == Resources("k<double>", 30, 0, 0, 0, 0)
    with pytest.raises(ValueError, match=r"log: expected ptxas's report of \['other<float>'\]"):
        parse_ptxas_log(LOG, {"other<float>": "_Z5otherIfEvPKT_"})


@pytest.mark.parametrize("registers, shared, block, blocks, fraction, limiter", [
    (32, 0, 256, 8, 1.0, "warps"),               # 8 warps x 8 blocks = the SM's 64 warps
    (40, 0, 256, 6, 0.75, "registers"),          # 1280 per warp: 12 warps per sub-partition
    (64, 0, 256, 4, 0.5, "registers"),
    (255, 0, 256, 1, 0.125, "registers"),        # 8192 per warp: 2 warps per sub-partition
    (64, 0, 1024, 1, 0.5, "registers"),
    (16, 0, 32, 32, 0.5, "blocks"),              # at most 32 blocks per SM
    (32, 48 * 1024, 256, 4, 0.5, "shared memory"),   # 49 KB with the 1 KB reserved: 4 in 228 KB
    (32, 228 * 1024, 256, 0, 0.0, "shared memory"),  # over 227 KB per block: cannot launch
])
def test_occupancy_follows_the_h100_limits(registers, shared, block, blocks, fraction, limiter):
    o = occupancy(Resources("k", registers, 0, 0, 0, shared), block)
    assert (o.blocks_per_sm, o.fraction, o.limiter) == (blocks, fraction, limiter)


def test_the_launcher_block_sizes():
    assert cuda_resources.launcher_block("relu_forward<float>") == loader.BLOCK
    assert cuda_resources.launcher_block("cross_entropy_forward<double>") == 256       # 1000 classes
    assert cuda_resources.launcher_block("soft_cross_entropy_forward<float>", classes=10) == 32
    with pytest.raises(ValueError, match="block: expected 1 to 1024 threads, got 2048"):
        occupancy(Resources("k", 32, 0, 0, 0, 0), 2048)
