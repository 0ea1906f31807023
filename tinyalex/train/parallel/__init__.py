"""Data-parallel training across ranks: distributed.py (the MPI world, its collectives and
NCCL) and data_parallel.py (the gradient of a global batch from micro-batches and ranks)."""
