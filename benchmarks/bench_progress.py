"""Does a gradient exchange between two CPU ranks progress while backward computes? The
ways tinyalex could drive it, measured side by side (the reasons for the design of
tinyalex/train/parallel/overlap.py):

- serial: backward, then the exchange (World.allreduce_ on the main thread);
- posted-before: the exchange's Isend/Irecv posted before backward and waited for after it
  (MPI moves a large message only inside MPI calls: does it move during backward?);
- thread-polling: a communication thread runs World.allreduce_, polling with sleeps (every
  Numba kernel holds Python's GIL until it returns: how often does the thread get to poll?);
- thread-meet-block: overlap.ThreadAllreduce, what `tinyalex train` uses: the thread meets
  its partner with a polled empty message, then waits in one blocking MPI_Waitall that
  releases the GIL.

With --async-progress the job runs under MPIR_CVAR_ASYNC_PROGRESS=1 (MPICH's own progress
thread, which needs MPI_THREAD_MULTIPLE). The compute is a real backward: cpu-alexnet,
forward and backward of a batch; the exchange sums a float32 buffer of --mb megabytes over
the 2 ranks. Rounds of all variants interleave, each preceded by a barrier; medians of wall
and CPU seconds (the process's, all threads). Overlap = (backward alone + exchange alone -
both) / exchange alone: 0 for none, 1 when the exchange hides completely.

    PYTHONPATH=. python benchmarks/bench_progress.py [--mb 64] [--rounds 5] [--async-progress]
"""
import argparse
import os
import subprocess
import sys
import time

VARIANTS = ("serial", "posted-before", "thread-polling", "thread-meet-block")


def rank_run(megabytes, rounds, async_progress):
    import mpi4py
    mpi4py.rc.thread_level = "multiple" if async_progress else "serialized"
    import numpy as np
    from mpi4py import MPI

    import tinyalex  # noqa: F401  (thread settings before numpy's BLAS loads)
    from tinyalex import functional as F
    from tinyalex import random as _random
    from tinyalex.tensor import tensor
    from tinyalex.train import models
    from tinyalex.train.parallel.distributed import World, wait
    from tinyalex.train.parallel.overlap import ThreadAllreduce
    world = World(MPI.COMM_WORLD)
    _random.manual_seed(0)
    model = models.create_model("cpu-alexnet", 10)
    rng = np.random.default_rng(world.rank)
    images = rng.random((32, 1, 28, 28)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    buffer = np.ones(megabytes * 2**18, np.float32)
    received = np.empty_like(buffer)

    class PollingWorld(World):
        def allreduce_(self, buffer, on_thread=False):      # every request polled with wait()
            return super().allreduce_(buffer)

    polling = ThreadAllreduce(PollingWorld(MPI.COMM_WORLD.Dup()))
    meet_block = ThreadAllreduce.over(world)

    def backward():
        loss = F.cross_entropy(model(tensor(images)), tensor(labels), reduction="sum")
        loss.backward()

    def run(variant):
        if variant == "backward alone":
            backward()
        elif variant == "exchange alone":
            world.allreduce_(buffer)
        elif variant == "serial":
            backward()
            world.allreduce_(buffer)
        elif variant == "posted-before":
            partner = world.rank ^ 1
            requests = [world.comm.Isend(buffer, dest=partner, tag=5),
                        world.comm.Irecv(received, source=partner, tag=5)]
            backward()
            for request in requests:
                wait(request)
            buffer.__iadd__(received)
        else:
            reducer = polling if variant == "thread-polling" else meet_block
            reducer.start(buffer)
            backward()
            reducer.finish()

    names = ("backward alone", "exchange alone") + VARIANTS
    times = {name: ([], []) for name in names}
    for round_ in range(rounds + 1):                 # round 0: warm-up (JIT, page faults)
        for name in names if round_ % 2 else names[::-1]:
            buffer[...] = 1
            world.barrier()
            t0, c0 = time.perf_counter(), time.process_time()
            run(name)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            if name != "backward alone" and not (buffer == 2).all():    # both ranks' ones, summed
                raise SystemExit(f"{name}: expected every element of the sum to be 2")
            if round_:
                times[name][0].append(wall)
                times[name][1].append(cpu)
    if world.rank == 0:
        med = {name: (float(np.median(w)), float(np.median(c))) for name, (w, c) in times.items()}
        alone_b, alone_x = med["backward alone"][0], med["exchange alone"][0]
        print(f"{megabytes} MB, {rounds} rounds, MPIR_CVAR_ASYNC_PROGRESS="
              f"{os.environ.get('MPIR_CVAR_ASYNC_PROGRESS', 'unset')}, load {os.getloadavg()[0]:.1f}")
        for name in names:
            wall, cpu = med[name]
            extra = "" if name not in VARIANTS else f"  overlap {(alone_b + alone_x - wall) / alone_x:+.2f}"
            print(f"  {name:18s} wall {wall * 1e3:7.1f} ms  CPU {cpu * 1e3:7.1f} ms{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="megabytes exchanged (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default: %(default)s)")
    parser.add_argument("--async-progress", action="store_true", help="MPIR_CVAR_ASYNC_PROGRESS=1")
    parser.add_argument("--rank-run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_run:
        return rank_run(args.mb, args.rounds, args.async_progress)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_"))}
    if args.async_progress:
        env["MPIR_CVAR_ASYNC_PROGRESS"] = "1"
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    command = [mpiexec, "-n", "2", sys.executable, __file__, "--rank-run", "--mb", str(args.mb),
               "--rounds", str(args.rounds)] + (["--async-progress"] if args.async_progress else [])
    return subprocess.run(command, env=env, timeout=1800).returncode


if __name__ == "__main__":
    sys.exit(main())
