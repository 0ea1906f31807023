"""Thread settings that each runtime reads once, when it loads: ``import tinyalex`` runs
this module before numpy and numba load. It reads and sets environment variables only; it
imports no MPI.

Spin waits. Each runtime keeps idle workers busy-waiting after a parallel region so the
next one starts fast: GNU libgomp (Numba's 'omp' layer) for GOMP_SPINCOUNT = 300000
rounds, OpenBLAS for 2**OPENBLAS_THREAD_TIMEOUT = 2**28 cycles (~0.1 s). On a machine with
few cores a spinning worker of one pool steals the core the other pool's next region
needs, so :func:`shorten_spin_waits` shortens both, unless the user chose them or the
library is already loaded (the numba kernel set calls it again on import, in time for
libgomp, which Numba loads at its first parallel loop). A program that imports numpy
before tinyalex can set OPENBLAS_THREAD_TIMEOUT=4 itself. The effect is measured in
benchmarks/results/cpu_design_notes.md.

Threads per rank. Under ``mpiexec -n K`` each rank would start as many Numba, OpenMP and
BLAS threads as the machine has cores; :func:`configure_rank_threads` gives each rank
cores / local ranks instead (docs/pitfalls.md#rank-threads). Outside a launcher it does
nothing.
"""
import os
import sys

#: (variable, value, the library that reads it when loaded, the user settings it defers to)
SPIN_SETTINGS = (
    ("GOMP_SPINCOUNT", "10000", "libgomp", ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")),  # ~tens of us
    ("OPENBLAS_THREAD_TIMEOUT", "4", "openblas", ("OPENBLAS_THREAD_TIMEOUT",)),     # 2**4 cycles
)


def _loaded_libraries():
    """Paths of the shared libraries mapped into this process (Linux), else None."""
    try:
        with open("/proc/self/maps") as maps:
            return {line.split()[-1] for line in maps if ".so" in line}
    except OSError:
        return None


def shorten_spin_waits():
    """Set SPIN_SETTINGS whose library is not loaded yet and that the user has not chosen.

    Returns {variable: True if this call set it, False if it was left alone}.
    """
    loaded = _loaded_libraries()
    changed = {}
    for variable, value, library, user_settings in SPIN_SETTINGS:
        if loaded is None:                                         # no /proc: judge by module
            in_memory = library == "openblas" and "numpy" in sys.modules
        else:
            in_memory = any(library in path for path in loaded)
        chosen = any(name in os.environ for name in user_settings)
        changed[variable] = not (in_memory or chosen)
        if changed[variable]:
            os.environ[variable] = value
    return changed


# --- threads per rank under an MPI launcher ---------------------------------------------
#: (size, rank, local size, local rank) variables that launchers export, MPICH's Hydra
#: (and srun with PMI) first, then Open MPI's.
LAUNCHER_VARIABLES = (
    ("PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS", "MPI_LOCALRANKID"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE",
     "OMPI_COMM_WORLD_LOCAL_RANK"),
)

#: The thread-count variables each runtime reads once, when it loads.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS")

def launched(environ=None):
    """(size, rank, local size, local rank) as the MPI launcher exported them, without
    importing MPI; (1, 0, 1, 0) for a plain process. Local values default to the global
    ones when the launcher does not set them."""
    environ = os.environ if environ is None else environ
    for size_var, rank_var, local_size_var, local_rank_var in LAUNCHER_VARIABLES:
        if size_var in environ:
            try:
                size, rank = int(environ[size_var]), int(environ.get(rank_var, "0"))
                local_size = int(environ.get(local_size_var, size))
                local_rank = int(environ.get(local_rank_var, rank))
            except ValueError as exc:
                raise RuntimeError(f"{size_var}/{rank_var}: expected integers from the MPI "
                                   f"launcher, got {environ.get(size_var)!r}/"
                                   f"{environ.get(rank_var)!r}") from exc
            return size, rank, max(local_size, 1), local_rank
    return 1, 0, 1, 0


def available_cores():
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rank_threads(cores, local_size):
    """Threads per rank: the cores shared evenly by the ranks on this machine, at least 1."""
    return max(1, cores // max(local_size, 1))


def configure_rank_threads(environ=None):
    """When more than one rank runs on this machine, set THREAD_VARIABLES the user has not
    set to cores / local ranks. Must run before numpy and numba load (each reads its
    variable once); ``import tinyalex`` calls it first thing. Returns {variable: value}
    for what it set."""
    environ = os.environ if environ is None else environ
    size, _, local_size, _ = launched(environ)
    if size <= 1 or local_size <= 1:
        return {}
    threads = str(rank_threads(available_cores(), local_size))
    chosen = {}
    for variable in THREAD_VARIABLES:
        if variable not in environ:
            environ[variable] = chosen[variable] = threads
    return chosen
