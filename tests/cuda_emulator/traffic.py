"""The emulator's counting mode: memory transactions per warp-level instruction.

Opt-in, for benchmarks and for tests that ask for it; every other launch is unaffected::

    from cuda_emulator import count_traffic
    with count_traffic() as launches:          # launches of this block are counted
        lrn_forward(x, 5, 5e-4, 0.75, 2.0)     # any emulated launch: a launcher, a Kernel
    print(launches[0].table())

How runtime.cc counts (its header says more): every load and store of an argument array
or a ``__shared__`` variable is recorded with its warp, its instruction (the address of
the load or store in the compiled kernel) and how many times that lane has executed that
instruction before. The lanes of one warp with the same instruction and the same
occurrence are what a GPU issues as one warp-level request (lanes in lockstep, a loop's
k-th trip together):

- global memory: the request's distinct 32-byte sectors, counted from the start of the
  array's allocation (which a GPU aligns to 256 bytes). 32 lanes reading consecutive
  floats make 4 sectors; the same lanes 32 bytes apart make 32.
- shared memory: 32 banks of 4 bytes. A request is served in phases of 128 bytes of lanes
  (the warp for 4-byte accesses, each half-warp for 8-byte ones); a phase takes as many
  wavefronts as the most distinct 4-byte words that one bank must deliver. Lanes reading
  the same word share it (a broadcast). Replays are wavefronts beyond the conflict-free
  number. Each ``__shared__`` variable is taken to start at bank 0.
- per array: the distinct sectors the whole launch read and wrote, that is, the traffic
  if every sector moved once (a perfect cache).

What the counts leave out: caches (every request's sectors are counted as moved; L1 and L2
hits are not modelled), g++'s code generation instead of nvcc's (loads that one compiler
keeps in a register the other may repeat), and lanes that diverge within a warp (grouping
by occurrence assumes a warp's lanes run a loop's trips together).
"""
import ctypes
import dataclasses
from contextlib import contextmanager

from . import build

SECTOR_BYTES = 32
KINDS = ("global load", "global store", "shared load", "shared store")


class InstructionCounts(ctypes.Structure):
    """emu_instruction_counts of runtime.cc."""
    _fields_ = [("pc", ctypes.c_uint64), ("kind", ctypes.c_int), ("requests", ctypes.c_uint64),
                ("lanes", ctypes.c_uint64), ("bytes", ctypes.c_uint64), ("sectors", ctypes.c_uint64),
                ("wavefronts", ctypes.c_uint64), ("ideal_wavefronts", ctypes.c_uint64)]


class RegionCounts(ctypes.Structure):
    """emu_region_counts of runtime.cc."""
    _fields_ = [("read_sectors", ctypes.c_uint64), ("written_sectors", ctypes.c_uint64)]


@dataclasses.dataclass(frozen=True)
class Instruction:
    """One load or store of the kernel's code, summed over the launch's warp-level requests."""
    source: str            # 'lrn.cu:40', or '' where the debug info does not say
    kind: str              # one of KINDS
    requests: int          # warp-level executions
    lanes: int             # lane accesses, summed over the requests
    bytes: int             # bytes the lanes asked for
    sectors: int = 0       # global memory: distinct 32-byte sectors, summed over the requests
    wavefronts: int = 0    # shared memory: passes through the banks, summed
    ideal_wavefronts: int = 0

    @property
    def sectors_per_request(self):
        return self.sectors / self.requests if self.requests else 0.0

    @property
    def replays(self):
        """Bank-conflict replays: wavefronts beyond the conflict-free number."""
        return self.wavefronts - self.ideal_wavefronts


@dataclasses.dataclass(frozen=True)
class ArrayTraffic:
    """One argument array or __shared__ variable: the distinct sectors the launch read and wrote."""
    name: str              # the kernel's parameter name ('x') or the __shared__ variable's
    label: str             # as error messages name it, with the argument's type and shape
    nbytes: int
    shared: bool
    const: bool            # a `const T*` argument
    read_sectors: int
    written_sectors: int


@dataclasses.dataclass(frozen=True)
class LaunchTraffic:
    """The counts of one launch (or, from :func:`combine`, of several launches of a kernel)."""
    kernel: str
    grid: tuple
    block: tuple
    instructions: tuple
    arrays: tuple
    launches: int = 1

    def _of(self, kind):
        return [i for i in self.instructions if i.kind == kind]

    def requests(self, kind):
        return sum(i.requests for i in self._of(kind))

    def sectors(self, kind):
        return sum(i.sectors for i in self._of(kind))

    def sectors_per_request(self, kind):
        requests = self.requests(kind)
        return self.sectors(kind) / requests if requests else 0.0

    @property
    def bytes_moved(self):
        """Global bytes moved: every request's sectors, loads and stores (no cache hits)."""
        return SECTOR_BYTES * (self.sectors("global load") + self.sectors("global store"))

    @property
    def compulsory_bytes(self):
        """Global bytes if each sector read or written moved once (a perfect cache)."""
        return SECTOR_BYTES * sum(a.read_sectors + a.written_sectors for a in self.arrays
                                  if not a.shared)

    @property
    def bank_conflict_replays(self):
        return sum(i.replays for kind in KINDS[2:] for i in self._of(kind))

    def table(self):
        """The per-instruction counts as a markdown table, under one summary line."""
        lines = [f"{self.kernel}, grid {self.grid}, block {self.block}"
                 + (f", {self.launches} launches" if self.launches > 1 else "")
                 + f": {self.bytes_moved} global bytes moved ({self.compulsory_bytes} if every sector"
                 f" moved once), {self.bank_conflict_replays} bank-conflict replays", "",
                 "| source | kind | requests | lanes/request | sectors/request | wavefronts | replays |",
                 "|---|---|---:|---:|---:|---:|---:|"]
        for i in self.instructions:
            shared = i.kind.startswith("shared")
            lines.append(f"| {i.source or '?'} | {i.kind} | {i.requests} | {i.lanes / i.requests:.1f} |"
                         f" {'' if shared else f'{i.sectors_per_request:.2f}'} |"
                         f" {i.wavefronts if shared else ''} | {i.replays if shared else ''} |")
        return "\n".join(lines)


def combine(launches):
    """One LaunchTraffic summing `launches` (of the same kernel, say one per parameter array):
    instructions with the same source and kind add up, arrays are listed side by side."""
    launches = list(launches)
    if not launches:
        raise ValueError("launches: expected at least one launch, got none")
    summed = {}
    for launch in launches:
        for i in launch.instructions:
            key = (i.source, i.kind)
            if key in summed:
                before = summed[key]
                i = dataclasses.replace(i, **{f: getattr(before, f) + getattr(i, f) for f in
                                              ("requests", "lanes", "bytes", "sectors", "wavefronts",
                                               "ideal_wavefronts")})
            summed[key] = i
    kernels = sorted({launch.kernel for launch in launches})
    return LaunchTraffic(" + ".join(kernels), launches[0].grid, launches[0].block, tuple(summed.values()),
                         tuple(a for launch in launches for a in launch.arrays),
                         sum(launch.launches for launch in launches))


@dataclasses.dataclass(frozen=True)
class LibraryCall:
    """Work the cupy kernel set hands to CuPy itself, which the emulator does not run as
    CUDA: a cuBLAS GEMM, or one of CuPy's own elementwise, reduction or copy kernels.
    fake_cupy records each inside a count_traffic() block, with what an ideal kernel would
    cost: its operands read once and its result written once."""
    what: str              # 'cuBLAS GEMM', 'CuPy elementwise', 'CuPy reduction', 'CuPy copy'
    detail: str            # '(96x363) @ (363x6050)', 'add', ...
    flops: int
    bytes: int


class Counted(list):
    """What a count_traffic() block saw: a list of LaunchTraffic, one per kernel launch in
    order, and the LibraryCalls in `library_calls`."""

    def __init__(self):
        super().__init__()
        self.library_calls = []


_sinks = []


@contextmanager
def count_traffic():
    """Count the memory traffic of every emulated launch in the block: yields a list
    (:class:`Counted`) that gets one :class:`LaunchTraffic` per launch, in order."""
    launches = Counted()
    _sinks.append(launches)
    try:
        yield launches
    finally:
        _sinks.remove(launches)


def record_library_call(what, detail, flops, nbytes):
    """Note CuPy's or cuBLAS's work in the innermost count_traffic() block, if there is one."""
    if _sinks:
        _sinks[-1].library_calls.append(LibraryCall(what, detail, int(flops), int(nbytes)))


def active_sink():
    """The list of the innermost count_traffic() block, or None outside one."""
    return _sinks[-1] if _sinks else None


def read_launch(lib, kernel, grid, block, buffers, shared):
    """The runtime's counts of the launch that just finished, as a LaunchTraffic.
    `buffers` (the arrays) and `shared` (the __shared__ variables) are the launch's regions,
    [(address, size, writable, name, origin)], in the order the runtime was given them."""
    raw = [lib.emu_counted_instruction(i) for i in range(lib.emu_counted_instructions())]
    module = kernel.module
    sources = build.source_lines(module.path, [c.pc - module.base - 1 for c in raw])
    instructions = tuple(Instruction(source, KINDS[c.kind], c.requests, c.lanes, c.bytes, c.sectors,
                                     c.wavefronts, c.ideal_wavefronts) for c, source in zip(raw, sources))
    counts = [lib.emu_counted_region(i) for i in range(lib.emu_counted_regions())]
    arrays = tuple(ArrayTraffic(label.split("'")[1], label, size, index >= len(buffers), not writable,
                                c.read_sectors, c.written_sectors)
                   for index, ((_, size, writable, label, _), c) in enumerate(zip(buffers + shared, counts))
                   if c.read_sectors or c.written_sectors)
    return LaunchTraffic(kernel.name, tuple(grid), tuple(block), instructions, arrays)
