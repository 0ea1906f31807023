"""torch.utils.data's Dataset, TensorDataset and DataLoader, on tinyalex's own loader.

:class:`DataLoader` takes torch's arguments and hands the batching to
:class:`tinyalex.train.data.DataLoader` (sample order, batches, background prefetch). A
:class:`TensorDataset` batches by one indexing call per tensor; any other map-style
dataset (``__getitem__`` and ``__len__``) is read sample by sample and collated with
:func:`default_collate`, torch's rules: tensors and arrays are stacked, Python numbers
become an int64 / float64 / bool tensor, and tuples, lists and dicts are collated field by
field (a tuple of fields comes back as a list, as in torch: ``inputs, labels = data``).

The shuffle order of each pass is drawn from tinyalex's global generator when iteration
starts, so ``tinyalex.manual_seed`` makes it repeatable; it differs from torch's order for
the same seed. ``num_workers`` > 0 prefetches ``2 * num_workers`` batches on one background
thread instead of starting worker processes.
"""
import collections.abc
import numbers

import numpy as np

from tinyalex.utils.data import loader as _loader
from tinyalex import device as _device
from tinyalex import random as _random
from tinyalex.tensor import Tensor, _as_array, bool_, float64, int64

__all__ = ["Dataset", "TensorDataset", "DataLoader", "default_collate"]


class Dataset:
    """A map-style dataset: subclasses define ``__getitem__(index)`` and ``__len__()``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")


class TensorDataset(Dataset):
    """Samples are ``(t[i] for t in tensors)``; every tensor has the same first dimension."""

    def __init__(self, *tensors):
        if not tensors or not all(isinstance(t, Tensor) and t.ndim >= 1 for t in tensors):
            raise TypeError("TensorDataset: expected one or more Tensors with at least one dim, "
                            f"got {[type(t).__name__ for t in tensors]}")
        sizes = [t.shape[0] for t in tensors]
        if len(set(sizes)) != 1:
            raise ValueError(f"TensorDataset: expected tensors of one first-dim size, got {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return self.tensors[0].shape[0]

    def get_batch(self, indices):
        """The collated batch in one indexing call per tensor (what default_collate would
        build from the samples, without the per-sample work)."""
        return [Tensor(t.array[_device.to_device(np.asarray(indices), t.device)]) for t in self.tensors]


def default_collate(batch):
    """Merge a list of samples into a batch, with torch's default_collate rules."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        xp = _device.array_module(elem.array)
        return Tensor(xp.stack([t.array for t in batch]))
    if isinstance(elem, np.ndarray):
        return Tensor(_as_array(np.stack(batch), None, None))
    if isinstance(elem, (bool, np.bool_)):
        return Tensor(np.asarray(batch, dtype=bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor(np.asarray(batch, dtype=int64))
    if isinstance(elem, numbers.Real):
        return Tensor(np.asarray(batch, dtype=float64))
    if isinstance(elem, str):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([sample[key] for sample in batch]) for key in elem}
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise ValueError("default_collate: expected every sample to have the same number "
                             f"of fields, got {sorted({len(s) for s in batch})}")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate: expected Tensors, arrays, numbers, str, dicts or "
                    f"sequences, got {type(elem).__name__}")


class _Samples:
    """A map-style dataset seen as tinyalex.train.data's batch interface: one __getitem__ per
    sample, then collate_fn."""

    def __init__(self, dataset, collate_fn):
        self.dataset, self.collate_fn = dataset, collate_fn

    def __len__(self):
        return len(self.dataset)

    def get_batch(self, indices):
        return self.collate_fn([self.dataset[int(i)] for i in indices])


class DataLoader:
    """torch.utils.data.DataLoader over a map-style dataset: batches of ``batch_size``
    samples, reshuffled on every pass when ``shuffle``, the last short batch dropped when
    ``drop_last``. ``sampler`` and ``batch_sampler`` are not supported. ``pin_memory`` is
    accepted and has no effect (host-to-GPU copies here are synchronous)."""

    def __init__(self, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                 num_workers=0, collate_fn=None, pin_memory=False, drop_last=False):
        if sampler is not None or batch_sampler is not None:
            raise ValueError("DataLoader: sampler and batch_sampler are not supported; pass "
                             "shuffle=True or shuffle=False")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError("DataLoader: dataset: expected a map-style dataset with __getitem__ "
                            f"and __len__, got {type(dataset).__name__}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers: expected an int >= 0, got {num_workers!r}")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, bool(shuffle)
        self.num_workers, self.drop_last, self.pin_memory = num_workers, drop_last, pin_memory
        self.collate_fn = default_collate if collate_fn is None else collate_fn
        fast = isinstance(dataset, TensorDataset) and collate_fn is None
        self._source = dataset if fast else _Samples(dataset, self.collate_fn)
        self._loader(0)  # check batch_size and drop_last now, as torch does

    def _loader(self, seed):
        return _loader.DataLoader(self._source, self.batch_size, shuffle=self.shuffle, seed=seed,
                                drop_last=self.drop_last, prefetch=2 * self.num_workers,
                                collate=lambda batch: batch)

    def __iter__(self):
        seed = _random.next_seed() if self.shuffle else 0
        return iter(self._loader(seed))

    def __len__(self):
        return len(self._loader(0))
