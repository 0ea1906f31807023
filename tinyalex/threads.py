"""Spin waits of the thread runtimes behind the numba kernel set.

Since the numba set runs its GEMMs as single-threaded BLAS calls on Numba's own pool
(tinyalex/cpu/blas.py), OpenBLAS's pool never starts and its spin no longer matters: the
speed does not depend on whether numpy was imported before tinyalex. What follows is why
the settings were needed when the GEMMs ran on OpenBLAS's threads; libgomp's is still
applied, since Numba's workers spin between its own parallel regions.

Each runtime keeps its idle workers busy-waiting after a parallel region, so that the
next region starts fast:

- GNU libgomp (Numba's 'omp' threading layer) spins GOMP_SPINCOUNT = 300000 rounds;
- OpenBLAS spins up to 2**OPENBLAS_THREAD_TIMEOUT = 2**28 cycles (~0.1 s).

A worker spinning in one pool steals a core from the other pool's next region. With both
spins shortened the conv layers run markedly faster on a 2-core machine, while a tiny op
such as ReLU keeps its start-up time (libgomp still spins briefly before it sleeps, so
back-to-back Numba kernels still start fast); the measurements are in
benchmarks/results/cpu_design_notes.md.

Both settings are environment variables that each runtime reads once, when it is
loaded. `shorten_spin_waits()` sets the ones whose runtime is not loaded yet (and that
the user has not chosen). ``import tinyalex`` calls it before anything imports numpy,
which is in time for OpenBLAS when tinyalex is imported before numpy (the ``tinyalex``
command always is); tinyalex.cpu calls it again on import, in time for libgomp (Numba loads
it at its first parallel loop) unless torch, which shares it, was imported before. A
program that imports numpy first can set OPENBLAS_THREAD_TIMEOUT=4 in the environment.
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
