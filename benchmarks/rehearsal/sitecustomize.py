"""Rehearsal of the GPU check only: every Python process of the check gets the emulated CuPy.

benchmarks/gpu_check.py --rehearse puts this folder first on PYTHONPATH and sets
TINYALEX_GPU_REHEARSAL=1, so Python imports this module at start-up in each step's
process (pytest, the smoke driver, tinyalex train): `cupy` is then the CPU emulator's
stand-in from tests/cuda_emulator, for the whole process, as the tests install it
around one test.

Under the ncu stand-in (bin/ncu), TINYALEX_REHEARSAL_TRAFFIC names a file: the process
then counts every emulated launch (the emulator's counting mode) and writes the counts
there as JSON when it exits, for the stand-in to print as ncu would.
"""
import os
import sys

if os.environ.get("TINYALEX_GPU_REHEARSAL") == "1":
    sys.path.append(os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                 "tests"))
    from cuda_emulator import fake_cupy
    # Kept referenced: a collected context manager would close and take the stand-in away.
    EMULATED_CUPY = fake_cupy.installed()
    EMULATED_CUPY.__enter__()

    if os.environ.get("TINYALEX_REHEARSAL_TRAFFIC"):
        import atexit
        import json

        from cuda_emulator import count_traffic
        COUNTING = count_traffic()
        LAUNCHES = COUNTING.__enter__()

        def _write_counts(path=os.environ["TINYALEX_REHEARSAL_TRAFFIC"]):
            counts = [{"kernel": t.kernel, "grid": t.grid, "block": t.block,
                       "load_requests": t.requests("global load"), "load_sectors": t.sectors("global load"),
                       "store_requests": t.requests("global store"), "store_sectors": t.sectors("global store"),
                       "load_bank_conflicts": sum(i.replays for i in t.instructions if i.kind == "shared load"),
                       "store_bank_conflicts": sum(i.replays for i in t.instructions if i.kind == "shared store")}
                      for t in LAUNCHES]
            with open(path + ".tmp", "w") as f:
                json.dump(counts, f)
            os.replace(path + ".tmp", path)
        atexit.register(_write_counts)
