"""Rehearsal of the GPU check only: every Python process of the check gets the emulated CuPy.

benchmarks/gpu_check.py --rehearse puts this folder first on PYTHONPATH and sets
TINYALEX_GPU_REHEARSAL=1, so Python imports this module at start-up in each step's
process (pytest, the smoke driver, tinyalex train): `cupy` is then the CPU emulator's
stand-in from tests/cuda_emulator, for the whole process, as the tests install it
around one test.
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
