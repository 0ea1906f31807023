"""Neural-network modules (like torch.nn)."""
from . import init
from .layers import (Conv2d, CrossEntropyLoss, Dropout, Flatten, Linear, LocalResponseNorm,
                     MaxPool2d, ReLU, Sequential)
from .module import Module, Parameter

__all__ = ["Module", "Parameter", "Conv2d", "Linear", "MaxPool2d", "LocalResponseNorm", "ReLU",
           "Dropout", "Flatten", "Sequential", "CrossEntropyLoss", "init"]
