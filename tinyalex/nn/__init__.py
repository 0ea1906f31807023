"""Neural-network modules (like torch.nn). ``tinyalex.nn.functional`` is
:mod:`tinyalex.functional` itself, so ``import tinyalex.nn.functional as F`` works as in torch."""
import sys

from tinyalex import functional
from tinyalex.nn import init
from tinyalex.nn.layers import (AdaptiveAvgPool2d, AvgPool2d, Conv2d, CrossEntropyLoss, Dropout, Flatten,
                     Linear, LocalResponseNorm, MaxPool2d, MSELoss, ReLU)
from tinyalex.nn.containers import ModuleDict, ModuleList, Sequential
from tinyalex.nn.module import Module, Parameter

sys.modules[__name__ + ".functional"] = functional

__all__ = ["Module", "Parameter", "Conv2d", "Linear", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "LocalResponseNorm", "ReLU",
           "Dropout", "Flatten", "Sequential", "ModuleList", "ModuleDict", "CrossEntropyLoss", "MSELoss", "init", "functional"]
