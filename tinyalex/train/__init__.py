"""The training application: ``tinyalex train`` and the other commands, built on the engine.

Nothing in the engine imports this package; ``import tinyalex`` never loads it. Each name
lives in one module and is imported from there:

- cli.py: the ``tinyalex`` command (train, prepare, eval, predict, gradcheck, graph, bench);
- config.py: TrainConfig, its defaults, presets and checks, and what --resume may change;
- loop.py: train(), the epochs and the step; Parts names what the loop calls;
- run_dir.py and checkpoint.py: the files in --out and their atomic write order;
- data/: the datasets, IDX files and transforms, and which of them a run reads (run_data.py);
- evaluation.py, progress.py, interrupt.py, stats.py (--grad-stats);
- step_log.py (steps.jsonl, --tensorboard) and curves.py (curves.png);
- models.py: AlexNet and its variants, and their presets;
- parallel/: ``mpiexec -n K`` ranks (distributed.py) and their step (data_parallel.py);
- opcheck.py: the op cases behind ``tinyalex gradcheck``.
"""
