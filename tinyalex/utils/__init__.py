"""torch.utils's counterpart: :mod:`tinyalex.utils.data` (Dataset, TensorDataset, DataLoader)."""
from tinyalex.utils import data

__all__ = ["data"]
