"""What each CUDA kernel costs an SM, without a GPU: NVRTC's ptxas report and the H100's limits.

:func:`nvrtc_compile` compiles a kernels/*.cu file exactly as ``cupy.RawModule`` will on a
GPU machine: the loader's source, options and name expressions, plus what CuPy adds
(``-ftz=true`` and the GPU's architecture, sm_90 for the lent H100/H200), with NVRTC 13
through cuda-bindings (the test extra). Asked for ``--ptxas-options=-v``, NVRTC's log
carries ptxas's report of each kernel: registers, spill stores and loads, stack frame and
static shared memory. :func:`kernel_resources` reads it for every instantiated kernel.

:func:`occupancy` turns that into the theoretical occupancy of one launch configuration on
an H100 (compute capability 9.0), following CUDA's occupancy calculator
(cuda_occupancy.h): registers are allocated per warp in units of 256, and per SM
sub-partition (4 of 16,384 registers); shared memory in units of 128 bytes, plus 1 KB the
driver reserves per block, from 228 KB per SM; at most 2,048 threads (64 warps) and 32
blocks per SM.

Used by tests/kernels/test_kernel_resources.py (the table in CI, and no spills) and
benchmarks/bench_cuda.py --predict (cuda-predicted.md).
"""
import dataclasses
import math
import re

from tinyalex.kernels.cupy import cross_entropy, loader

NVRTC_ARCH = "sm_90"
#: What cupy.RawModule adds to the loader's options (cupy/cuda/compiler.py): -ftz=true, and
#: -arch=sm_XX for the GPU in use when NVRTC can emit its cubin.
CUPY_ADDED_OPTIONS = ("-ftz=true", f"-arch={NVRTC_ARCH}")
PTXAS_VERBOSE = "--ptxas-options=-v"


@dataclasses.dataclass(frozen=True)
class SM:
    """The per-SM limits of one architecture that decide occupancy (cuda_occupancy.h)."""
    name: str
    registers: int = 65536
    register_unit: int = 256           # registers are allocated per warp in these units
    sub_partitions: int = 4            # each holds a quarter of the register file
    max_registers_per_thread: int = 255
    shared_bytes: int = 228 * 1024
    shared_unit: int = 128
    reserved_shared_per_block: int = 1024
    max_shared_per_block: int = 227 * 1024
    max_threads: int = 2048
    max_blocks: int = 32
    warp: int = 32

    @property
    def max_warps(self):
        return self.max_threads // self.warp


H100 = SM("H100 (sm_90)")


class NvrtcError(Exception):
    """NVRTC refused a source; the message is its log."""


def _check(result, what):
    """The value of a cuda.bindings call, which returns (status, value...) instead of raising."""
    from cuda.bindings import nvrtc
    status, *values = result
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise NvrtcError(f"{what}: {nvrtc.nvrtcGetErrorString(status)[1].decode()}")
    return values[0] if len(values) == 1 else values


def nvrtc_compile(source, file_name, options, name_expressions):
    """Compile like cupy.RawModule: ({name expression: lowered (mangled) name}, cubin, log).
    Raises NvrtcError with NVRTC's log if the source does not compile."""
    from cuda.bindings import nvrtc            # the test extra's cuda-bindings: ImportError fails the test
    program = _check(nvrtc.nvrtcCreateProgram(source.encode(), file_name.encode(), 0, [], []), "create")
    try:
        for expression in name_expressions:
            _check(nvrtc.nvrtcAddNameExpression(program, expression.encode()), f"name expression {expression}")
        encoded = [option.encode() for option in options]
        status = nvrtc.nvrtcCompileProgram(program, len(encoded), encoded)[0]
        log = bytearray(_check(nvrtc.nvrtcGetProgramLogSize(program), "log size"))
        _check(nvrtc.nvrtcGetProgramLog(program, log), "log")
        log = log.decode(errors="replace").rstrip("\0")
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise NvrtcError(f"{file_name} with {' '.join(options)}:\n{log}")
        lowered = {e: _check(nvrtc.nvrtcGetLoweredName(program, e.encode()), f"lowered name of {e}").decode()
                   for e in name_expressions}
        cubin = bytearray(_check(nvrtc.nvrtcGetCUBINSize(program), "cubin size"))
        _check(nvrtc.nvrtcGetCUBIN(program, cubin), "cubin")
        return lowered, bytes(cubin), log
    finally:
        _check(nvrtc.nvrtcDestroyProgram(program), "destroy")


@dataclasses.dataclass(frozen=True)
class Resources:
    """ptxas's report of one kernel."""
    kernel: str                # name expression: 'lrn_forward<float>'
    registers: int
    spill_stores: int          # bytes
    spill_loads: int           # bytes
    stack_frame: int           # bytes of local memory per thread
    shared: int                # bytes of static shared memory per block

    @property
    def spills(self):
        return self.spill_stores + self.spill_loads


PTXAS_ENTRY = re.compile(r"Function properties for (\S+)\n.*?(\d+) bytes stack frame, (\d+) bytes spill stores,"
                         r" (\d+) bytes spill loads\n.*?Used (\d+) registers(.*)")
PTXAS_SHARED = re.compile(r"(\d+) bytes smem")


def parse_ptxas_log(log, lowered):
    """{name expression: Resources} from NVRTC's log with --ptxas-options=-v, for the
    kernels in `lowered` ({name expression: mangled name}). Raises ValueError if one is missing."""
    by_symbol = {}
    for symbol, stack, stores, loads, registers, rest in PTXAS_ENTRY.findall(log):
        shared = PTXAS_SHARED.search(rest)
        by_symbol[symbol] = (int(registers), int(stores), int(loads), int(stack),
                             int(shared.group(1)) if shared else 0)
    missing = sorted(e for e, symbol in lowered.items() if symbol not in by_symbol)
    if missing:
        raise ValueError(f"log: expected ptxas's report of {missing}, got none in:\n{log}")
    return {e: Resources(e, *by_symbol[symbol]) for e, symbol in lowered.items()}


def file_resources(file):
    """{name expression: Resources} of every kernel of kernels/`file`, both dtypes."""
    lowered, _, log = nvrtc_compile(loader.source(file), file,
                                    loader.COMPILE_OPTIONS + CUPY_ADDED_OPTIONS + (PTXAS_VERBOSE,),
                                    loader.name_expressions(file))
    return parse_ptxas_log(log, lowered)


def kernel_resources():
    """{name expression: Resources} of every kernel the loader compiles, file by file."""
    return {e: r for file in sorted(loader.KERNEL_FILES) for e, r in file_resources(file).items()}


#: Kernels that do not run on loader.BLOCK threads: one block per row, as many threads as
#: the row has classes rounded up to a warp, at most MAX_ROW_THREADS (tinyalex/kernels/cupy/cross_entropy.py).
ROW_KERNELS = ("cross_entropy_forward", "soft_cross_entropy_forward")


def launcher_block(kernel, classes=1000):
    """Threads per block the launcher uses for `kernel` (a name or name expression); the
    row-per-block forwards at `classes` classes (AlexNet's 1000 by default)."""
    name = kernel.split("<")[0]
    if name in ROW_KERNELS:
        return min(cross_entropy.MAX_ROW_THREADS, cross_entropy.WARP * -(-classes // cross_entropy.WARP))
    return loader.BLOCK


@dataclasses.dataclass(frozen=True)
class Occupancy:
    block: int                 # threads per block
    blocks_per_sm: int
    limiter: str               # what stops one more block: 'registers', 'shared memory', 'warps', 'blocks'
    sm: SM = H100

    @property
    def warps_per_sm(self):
        return self.blocks_per_sm * math.ceil(self.block / self.sm.warp)

    @property
    def fraction(self):
        """Theoretical occupancy: active warps over the SM's maximum."""
        return self.warps_per_sm / self.sm.max_warps


def _round_up(value, unit):
    return -(-value // unit) * unit


def occupancy(resources, block, sm=H100):
    """Theoretical occupancy of `resources` launched with `block` threads per block on `sm`."""
    if not 1 <= block <= 1024:
        raise ValueError(f"block: expected 1 to 1024 threads, got {block}")
    warps = math.ceil(block / sm.warp)
    registers_per_warp = _round_up(resources.registers * sm.warp, sm.register_unit)
    if resources.registers > sm.max_registers_per_thread or \
            registers_per_warp * _round_up(warps, sm.sub_partitions) > sm.registers:
        by_registers = 0
    else:
        per_sub_partition = sm.registers // sm.sub_partitions // max(registers_per_warp, 1)
        by_registers = per_sub_partition * sm.sub_partitions // warps
    shared = _round_up(resources.shared + sm.reserved_shared_per_block, sm.shared_unit)
    by_shared = 0 if resources.shared > sm.max_shared_per_block else sm.shared_bytes // shared
    # In this order, so that a tie names the SM's own limit rather than the kernel's.
    limits = {"warps": sm.max_warps // warps, "blocks": sm.max_blocks, "shared memory": by_shared,
              "registers": by_registers}
    limiter = min(limits, key=limits.get)
    return Occupancy(block, limits[limiter], limiter, sm)


def resource_table(resources):
    """A markdown table of `resources` ({name expression: Resources}) with each kernel's
    occupancy at its launcher's block size."""
    lines = [f"| kernel | registers | spill stores B | spill loads B | stack B | static shared B | block |"
             f" blocks/SM | occupancy | limited by |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, r in resources.items():
        o = occupancy(r, launcher_block(name))
        lines.append(f"| {name} | {r.registers} | {r.spill_stores} | {r.spill_loads} | {r.stack_frame} |"
                     f" {r.shared} | {o.block} | {o.blocks_per_sm} | {o.fraction:.0%} | {o.limiter} |")
    return "\n".join(lines)
