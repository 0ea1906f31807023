"""Containers with torch.nn's names and semantics: Sequential, ModuleList, ModuleDict.

Children live in ``_modules`` under string keys ('0', '1', ... for the sequences), so
``state_dict`` keys, traversal order and edits (``seq[1] = layer``, ``del seq[0]``,
``insert``) come out as in torch: a replaced child keeps its place, a deletion renumbers.
"""
import collections
import operator
from collections import abc
from itertools import chain

from tinyalex.errors import TypeAssertionError
from tinyalex.nn.module import Module, _typename


def _absolute_index(container, idx):
    """`idx` (an int or anything with __index__) as a position in [0, len), counting from
    the end when negative, as torch's containers index; else IndexError naming the range."""
    size = len(container)
    idx = operator.index(idx)
    if not -size <= idx < size:
        raise IndexError(f"index {idx} is out of range (a {type(container).__name__} of"
                         f" {size} modules takes -{size} <= index < {size})")
    return idx % size


def _insert(container, index, module):
    """Insert `module` before position `index` (negative counts from the end, as in
    torch's Sequential.insert), shifting the keys 'index'...'n-1' up by one as torch does."""
    if not isinstance(module, Module):
        raise TypeAssertionError(f"{type(container).__name__}.insert: module should be of type"
                              f" Module, got {_typename(module)}")
    modules, n = container._modules, len(container._modules)
    index = operator.index(index)
    if not -n <= index <= n:
        raise IndexError(f"Index out of range: {index} ({type(container).__name__}.insert on"
                         f" {n} modules takes -{n} <= index <= {n})")
    index = index + n if index < 0 else index
    missing = [str(i) for i in range(index, n) if str(i) not in modules]
    if missing:
        raise KeyError(f"{type(container).__name__}.insert: index {index} shifts the keys"
                       f" '{index}'...'{n - 1}' up by one, as torch does, but there is no key"
                       f" {missing[0]!r} (keys: {list(modules)})")
    for i in range(n, index, -1):
        modules[str(i)] = modules[str(i - 1)]
    modules[str(index)] = module


def _renumber(container):
    """Keys '0'...'n-1' in the current order (torch does this after every deletion)."""
    object.__setattr__(container, "_modules", collections.OrderedDict(
        (str(i), m) for i, m in enumerate(container._modules.values())))


class Sequential(Module):
    """Modules applied in order (torch.nn.Sequential). ``Sequential(a, b)`` names them '0',
    '1'; ``Sequential(OrderedDict(name=module, ...))`` keeps the names. A slice is a
    Sequential with the original keys; deleting renumbers '0'...'n-1'."""

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], collections.OrderedDict):
            for key, module in args[0].items():
                self.add_module(key, module)
        else:
            for idx, module in enumerate(args):
                self.add_module(str(idx), module)

    def forward(self, input):
        for module in self:
            input = module(input)
        return input

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(collections.OrderedDict(list(self._modules.items())[idx]))
        return list(self._modules.values())[_absolute_index(self, idx)]

    def __setitem__(self, idx, module):
        setattr(self, list(self._modules)[_absolute_index(self, idx)], module)

    def __delitem__(self, idx):
        keys = list(self._modules)
        for key in (keys[idx] if isinstance(idx, slice) else [keys[_absolute_index(self, idx)]]):
            delattr(self, key)
        _renumber(self)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add `module` under the key str(len(self)), as torch does (after a slice with
        keys '1', '2', that key is taken: the module replaces the last one, as in torch)."""
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index, module):
        _insert(self, index, module)
        return self

    def extend(self, sequential):
        for layer in sequential:
            self.append(layer)
        return self

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def _check_sequential(self, other):
        if not isinstance(other, Sequential):
            raise ValueError("add operator supports only objects of Sequential class, but"
                             f" {type(other)} is given.")

    def __add__(self, other):
        self._check_sequential(other)
        return Sequential().extend(self).extend(other)

    def __iadd__(self, other):
        self._check_sequential(other)
        offset = len(self)
        for i, module in enumerate(other):
            self.add_module(str(i + offset), module)
        return self

    def _check_factor(self, other):
        if not isinstance(other, int):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(other)}")
        if other <= 0:
            raise ValueError(f"Non-positive multiplication factor {other} for {type(self)}")

    def __mul__(self, other):
        self._check_factor(other)
        return Sequential(*(list(self) * other))

    __rmul__ = __mul__

    def __imul__(self, other):
        self._check_factor(other)
        original, offset = [self._modules[str(i)] for i in range(len(self))], len(self)
        for i, module in enumerate(original * (other - 1)):
            self.add_module(str(i + offset), module)
        return self


class ModuleList(Module):
    """A list of modules registered as children '0', '1', ... (torch.nn.ModuleList); no
    forward. A slice is a new ModuleList numbered from '0'; deleting renumbers."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self += modules

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return self.__class__(list(self._modules.values())[idx])
        return self._modules[str(_absolute_index(self, idx))]

    def __setitem__(self, idx, module):
        setattr(self, str(_absolute_index(self, idx)), module)

    def __delitem__(self, idx):
        if isinstance(idx, slice):
            for k in range(len(self._modules))[idx]:
                delattr(self, str(k))
        else:
            delattr(self, str(_absolute_index(self, idx)))
        _renumber(self)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        combined = ModuleList()
        for i, module in enumerate(chain(self, other)):
            combined.add_module(str(i), module)
        return combined

    def insert(self, index, module):
        """Insert before `index`. torch's ModuleList.insert accepts anything and breaks its
        numbering on a negative or too large index; here those follow Sequential.insert
        (negative counts from the end, out of range is IndexError, a non-Module TypeError)."""
        _insert(self, index, module)

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def extend(self, modules):
        if not isinstance(modules, abc.Iterable):
            raise TypeError("ModuleList.extend should be called with an iterable, but got "
                            + type(modules).__name__)
        offset = len(self)
        for i, module in enumerate(modules):
            self.add_module(str(offset + i), module)
        return self

    def __repr__(self):
        """torch's: a run of equal reprs prints once, as '(0-2): 3 x ReLU()'."""
        blocks = []                                   # [first index, last index, repr]
        for i, r in enumerate(repr(m) for m in self):
            if blocks and blocks[-1][2] == r:
                blocks[-1][1] = i
            else:
                blocks.append([i, i, r])
        if not blocks:
            return f"{type(self).__name__}()"
        lines = [(f"({a}): {r}" if a == b else f"({a}-{b}): {b - a + 1} x {r}").replace("\n", "\n  ")
                 for a, b, r in blocks]
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class ModuleDict(Module):
    """An ordered dict of modules registered as children under their keys
    (torch.nn.ModuleDict); no forward. Keys follow add_module's rules (a str, no '.',
    not an existing attribute such as 'training' or 'forward')."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def clear(self):
        self._modules.clear()

    def pop(self, key):
        v = self[key]
        del self[key]
        return v

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def update(self, modules):
        """From a mapping (its order), or an iterable of (key, module) pairs (their order);
        existing keys keep their place."""
        if not isinstance(modules, abc.Iterable):
            raise TypeError("ModuleDict.update should be called with an iterable of key/value"
                            " pairs, but got " + type(modules).__name__)
        if isinstance(modules, (abc.Mapping, ModuleDict)):
            for key, module in modules.items():
                self[key] = module
            return
        for j, pair in enumerate(modules):
            if not isinstance(pair, abc.Iterable):
                raise TypeError(f"ModuleDict update sequence element #{j} should be Iterable;"
                                f" is {type(pair).__name__}")
            if len(pair) != 2:
                raise ValueError(f"ModuleDict update sequence element #{j} has length"
                                 f" {len(pair)}; 2 is required")
            self[pair[0]] = pair[1]
