"""torch.utils's counterpart: :mod:`tinyalex.utils.data` (Dataset, TensorDataset, DataLoader)."""
from . import data

__all__ = ["data"]
