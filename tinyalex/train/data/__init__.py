"""The training application's data: datasets, IDX files and the 2012 paper's augmentation.

- :func:`load_fashion_mnist` reads Fashion-MNIST's IDX files (:func:`read_idx`) into an
  :class:`ArrayDataset`; :class:`ImageFolder` decodes class-per-directory JPEG/PNG files
  (ImageNet-style) lazily, at the paper's 256x256.
- transforms.py holds vectorised batch transforms: Resize, RandomCrop,
  RandomHorizontalFlip, CenterCrop, TenCrop, ToFloat, Normalize and PCALighting.
- run_data.py turns a run's settings into them: --dataset, --limit-*, --skip-bad-images,
  and each model's preprocessing.
- The loader that batches them is the engine's (tinyalex/utils/data/loader.py), with
  per-sample random draws from tinyalex.random.SampleRNG.

A dataset is anything with ``len()`` and ``get_batch(indices) -> (uint8 images, int64 labels)``.
"""
