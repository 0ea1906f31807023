"""Module containers against torch: the same edits on both libraries, then the same modules
(names and types, in order), the same state_dict keys in the same order, the same outputs.

Each edit runs as ``edit(lib, model)`` with lib the torch or the tinyalex namespace; the
tinyalex model then takes the torch model's weights through load_state_dict, so outputs
agree exactly when (and only when) the layers run in the same order.
"""
import collections
import random

import numpy as np
import pytest
import torch

import tinyalex as ta
import tinyalex.nn as nn
from tinyalex.errors import TypeAssertionError

X_IMAGE = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
X_VECTOR = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)


def convnet(lib):
    """features (named children) and classifier, as torchvision's AlexNet has them."""
    nn_ = lib.nn
    return nn_.Sequential(collections.OrderedDict(
        features=nn_.Sequential(nn_.Conv2d(3, 4, 3, padding=1), nn_.ReLU(),
                                nn_.Conv2d(4, 4, 3, padding=1), nn_.ReLU(), nn_.MaxPool2d(2)),
        classifier=nn_.Sequential(nn_.Flatten(), nn_.Linear(64, 5))))


def tower(lib):
    """A ModuleList of blocks and a ModuleDict of heads; forward returns every head's
    output, in the dict's order."""
    nn_ = lib.nn

    class Tower(nn_.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn_.ModuleList([nn_.Linear(4, 4) for _ in range(3)])
            self.heads = nn_.ModuleDict({"a": nn_.Linear(4, 2), "b": nn_.Linear(4, 3)})

        def forward(self, x):
            for block in self.blocks:
                x = nn_.functional.relu(block(x))
            return [head(x) for head in self.heads.values()]

    return Tower()


def layout(model):
    """What the order of a model is made of: modules (name, type) as traversal gives them,
    children, parameter names, state_dict keys, and the order apply() visits."""
    visited = []
    model.apply(lambda m: visited.append(type(m).__name__))
    return {"modules": [(n, type(m).__name__) for n, m in model.named_modules()],
            "children": [(n, type(m).__name__) for n, m in model.named_children()],
            "parameters": [n for n, _ in model.named_parameters()],
            "state_dict": list(model.state_dict()),
            "apply": visited}


def outputs(result):
    results = result if isinstance(result, list) else [result]
    return [r.detach().numpy() for r in results]


def assert_same_model(ours, theirs, x):
    """Same layout; with torch's weights loaded, the same outputs."""
    assert layout(ours) == layout(theirs)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for a, b in zip(outputs(ours(ta.tensor(x))), outputs(theirs(torch.tensor(x))), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def swap_relu_by_index(lib, m):          # the headline: model.features[1] = nn.ReLU()
    m.features[1] = lib.nn.ReLU()


def swap_relu_by_setattr(lib, m):
    setattr(m.features, "1", lib.nn.ReLU())


def swap_conv_by_setattr(lib, m):
    setattr(m.features, "2", lib.nn.Conv2d(4, 4, 3, padding=1))


def swap_last_by_negative_index(lib, m):
    m.features[-1] = lib.nn.MaxPool2d(2)


def swap_weight_parameter(lib, m):       # a Parameter replacing a Parameter keeps its place
    m.classifier[1].weight = lib.nn.Parameter(lib.ones(5, 64) * 0.01)


def drop_bias(lib, m):                   # None over a parameter: registered, not in state_dict
    m.classifier[1].bias = None


def parameter_over_module(lib, m):       # a Parameter named like a child: the child goes
    setattr(m.features, "3", lib.nn.Parameter(lib.zeros(2)))


def reassign_buffer(lib, m):             # a tensor replacing a buffer keeps its place
    m.register_buffer("scale", lib.ones(1))
    m.register_buffer("shift", lib.zeros(1))
    m.scale = lib.full((1,), 2.0)


def delete_and_renumber(lib, m):
    del m.features[1]


def delete_slice(lib, m):
    del m.features[1:4:2]


def pop_one(lib, m):
    assert type(m.features.pop(-2)).__name__ == "ReLU"


def insert_inside(lib, m):
    m.features.insert(3, lib.nn.Conv2d(4, 4, 3, padding=1))


def insert_negative(lib, m):
    m.features.insert(-1, lib.nn.ReLU())


def append_and_extend(lib, m):
    m.classifier.append(lib.nn.ReLU()).extend([lib.nn.Linear(5, 2), lib.nn.ReLU()])


def extend_with_sequential(lib, m):
    m.features.extend(lib.nn.Sequential(lib.nn.Conv2d(4, 4, 3, padding=1)))


def add_and_iadd(lib, m):
    m.features = m.features[:2] + m.features[2:]
    m.features += lib.nn.Sequential(lib.nn.ReLU())


def multiply(lib, m):
    m.classifier = m.classifier[:1] + lib.nn.Sequential(lib.nn.Linear(64, 64)) * 2 + m.classifier[1:]


def child_set_to_none_then_back(lib, m):
    m.features[3] = None
    m.features[3] = lib.nn.ReLU()


def eval_then_train_classifier(lib, m):
    m.eval()
    m.classifier.train()


CONVNET_EDITS = [swap_relu_by_index, swap_relu_by_setattr, swap_conv_by_setattr,
                 swap_last_by_negative_index, swap_weight_parameter, drop_bias,
                 parameter_over_module, reassign_buffer, delete_and_renumber, delete_slice,
                 pop_one, insert_inside, insert_negative, append_and_extend,
                 extend_with_sequential, add_and_iadd, multiply, child_set_to_none_then_back,
                 eval_then_train_classifier]


@pytest.mark.parametrize("edit", CONVNET_EDITS, ids=lambda f: f.__name__)
def test_sequential_edits_match_torch(edit):
    ours, theirs = convnet(ta), convnet(torch)
    edit(ta, ours)
    edit(torch, theirs)
    assert [m.training for m in ours.modules()] == [m.training for m in theirs.modules()]
    assert_same_model(ours, theirs, X_IMAGE)


def test_replaced_layer_keeps_its_place_in_the_forward():
    """The issue's case: with the old re-add-at-the-end, the ReLU ran after the second conv."""
    model = convnet(ta)
    relu = nn.ReLU()
    model.features[1] = relu
    assert list(model.features._modules) == ["0", "1", "2", "3", "4"]
    assert model.features[1] is relu and model.features._modules["1"] is relu


def replace_block(lib, m):
    m.blocks[1] = lib.nn.Linear(4, 4)


def replace_last_block(lib, m):
    m.blocks[-1] = lib.nn.Linear(4, 4)


def delete_block(lib, m):
    del m.blocks[0]


def delete_every_other_block(lib, m):
    m.blocks.append(lib.nn.Linear(4, 4))
    del m.blocks[::2]


def insert_and_pop_blocks(lib, m):
    m.blocks.insert(0, lib.nn.Linear(4, 4))
    m.blocks.insert(len(m.blocks), lib.nn.Linear(4, 4))
    m.blocks.pop(1)


def grow_blocks(lib, m):
    m.blocks += [lib.nn.Linear(4, 4)]
    m.blocks.extend(lib.nn.ModuleList([lib.nn.Linear(4, 4)])).append(lib.nn.Linear(4, 4))


def slice_and_add_blocks(lib, m):
    m.blocks = m.blocks[1:] + [lib.nn.Linear(4, 4)]


def replace_head(lib, m):                # an existing key keeps its place
    m.heads["a"] = lib.nn.Linear(4, 5)


def update_heads(lib, m):
    m.heads.update({"c": lib.nn.Linear(4, 1), "a": lib.nn.Linear(4, 2)})
    m.heads.update([("d", lib.nn.Linear(4, 2)), ["b", lib.nn.Linear(4, 3)]])


def delete_and_pop_heads(lib, m):
    del m.heads["a"]
    m.heads["a"] = m.heads.pop("b")


def clear_and_refill_heads(lib, m):
    m.heads.clear()
    m.heads.update(lib.nn.ModuleDict({"z": lib.nn.Linear(4, 1), "y": lib.nn.Linear(4, 2)}))


TOWER_EDITS = [replace_block, replace_last_block, delete_block, delete_every_other_block,
               insert_and_pop_blocks, grow_blocks, slice_and_add_blocks, replace_head,
               update_heads, delete_and_pop_heads, clear_and_refill_heads]


@pytest.mark.parametrize("edit", TOWER_EDITS, ids=lambda f: f.__name__)
def test_module_list_and_dict_edits_match_torch(edit):
    ours, theirs = tower(ta), tower(torch)
    edit(ta, ours)
    edit(torch, theirs)
    assert list(ours.heads) == list(theirs.heads) == list(ours.heads.keys())
    assert [k for k, _ in ours.heads.items()] == list(theirs.heads.keys())
    assert len(ours.blocks) == len(theirs.blocks) and len(ours.heads) == len(theirs.heads)
    assert_same_model(ours, theirs, X_VECTOR)


@pytest.mark.parametrize("probe", [
    lambda lib, s: list(s[1:]._modules),                       # a slice keeps the keys
    lambda lib, s: list(s[::-2]._modules),
    lambda lib, s: type(s[1:]).__name__,
    lambda lib, s: list(s[1:].append(lib.nn.ReLU())._modules),  # ... so append takes '2'
    lambda lib, s: [type(m).__name__ for m in s[1:].append(lib.nn.ReLU())],
    lambda lib, s: type(s[-3]).__name__,
    lambda lib, s: len(s),
    lambda lib, s: [type(m).__name__ for m in s],
    lambda lib, s: list(lib.nn.Sequential(collections.OrderedDict(a=s[0], b=s[1]))._modules),
    lambda lib, s: list(lib.nn.Sequential(collections.OrderedDict(a=s[0], b=s[1]))[1:]._modules),
    lambda lib, s: (lambda n: (n.__delitem__(0), list(n._modules))[1])(
        lib.nn.Sequential(collections.OrderedDict(a=s[0], b=s[1]))),
    lambda lib, s: list(lib.nn.ModuleList(s)[1:]._modules),     # a ModuleList slice renumbers
    lambda lib, s: type(lib.nn.ModuleList(s)[1:]).__name__,
    lambda lib, s: type(lib.nn.ModuleList(s) + s).__name__,
    lambda lib, s: repr(lib.nn.ModuleList([lib.nn.ReLU(), lib.nn.ReLU(), lib.nn.Linear(2, 3),
                                           lib.nn.ReLU()])),
    lambda lib, s: repr(lib.nn.ModuleList()),
    lambda lib, s: repr(lib.nn.ModuleDict({"a": lib.nn.ReLU()})),
    lambda lib, s: "a" in lib.nn.ModuleDict({"a": lib.nn.ReLU()}),
    lambda lib, s: list(lib.nn.Sequential(s[0], s[0]).named_modules()).__len__(),
    lambda lib, s: list(lib.nn.Sequential(s[0], s[0]).named_modules(remove_duplicate=False)).__len__(),
    lambda lib, s: [n for n, _ in lib.nn.Sequential(s[0], s[0]).named_children()],
    lambda lib, s: list(lib.nn.Sequential(lib.nn.Linear(1, 1)).append(lib.nn.ReLU())[0:1]
                        .append(lib.nn.Linear(1, 1)).state_dict()),
])
def test_container_protocols_match_torch(probe):
    def seq(lib):
        return lib.nn.Sequential(lib.nn.ReLU(), lib.nn.Flatten(), lib.nn.MaxPool2d(2))
    assert probe(ta, seq(ta)) == probe(torch, seq(torch))


def same_error(fn):
    """fn(torch) and fn(tinyalex) raise the same class of exception (ours may be a subclass)."""
    with pytest.raises(Exception) as theirs:
        fn(torch)
    with pytest.raises(type(theirs.value)):
        fn(ta)


def seq3(lib):
    return lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.ReLU(), lib.nn.Linear(2, 2))


@pytest.mark.parametrize("fn", [
    lambda lib: seq3(lib)[3], lambda lib: seq3(lib)[-4], lambda lib: seq3(lib)["1"],
    lambda lib: seq3(lib)[1.0], lambda lib: seq3(lib).__setitem__(5, lib.nn.ReLU()),
    lambda lib: seq3(lib).__setitem__(0, 3), lambda lib: seq3(lib).__delitem__(-4),
    lambda lib: seq3(lib).insert(4, lib.nn.ReLU()), lambda lib: seq3(lib).insert(0, 3),
    lambda lib: seq3(lib).append("relu"), lambda lib: seq3(lib).extend([3]),
    lambda lib: seq3(lib) + [lib.nn.ReLU()], lambda lib: seq3(lib).__iadd__(3),
    lambda lib: seq3(lib) * 0, lambda lib: seq3(lib) * 1.5, lambda lib: seq3(lib).pop(7),
    lambda lib: lib.nn.Sequential(3), lambda lib: lib.nn.Sequential({"a": lib.nn.ReLU()}),
    lambda lib: lib.nn.Sequential(collections.OrderedDict({"a.b": lib.nn.ReLU()})),
    lambda lib: lib.nn.Sequential(collections.OrderedDict({"": lib.nn.ReLU()})),
    lambda lib: lib.nn.Sequential(collections.OrderedDict({"forward": lib.nn.ReLU()})),
    lambda lib: (lambda s: (s.__setitem__(1, None), s(lib.zeros(1, 2))))(seq3(lib)),
    lambda lib: lib.nn.ModuleList(3), lambda lib: lib.nn.ModuleList([3]),
    lambda lib: lib.nn.ModuleList().append(3), lambda lib: lib.nn.ModuleList()[0],
    lambda lib: lib.nn.ModuleList([lib.nn.ReLU()])[-2],
    lambda lib: lib.nn.ModuleList([lib.nn.ReLU()]).__setitem__(0, 3),
    lambda lib: lib.nn.ModuleList([lib.nn.ReLU()]).__delitem__(1),
    lambda lib: lib.nn.ModuleList([lib.nn.ReLU()]) + 3,
    lambda lib: lib.nn.ModuleList([lib.nn.ReLU()])(lib.zeros(1)),
    lambda lib: lib.nn.ModuleDict({1: lib.nn.ReLU()}), lambda lib: lib.nn.ModuleDict({"a.b": lib.nn.ReLU()}),
    lambda lib: lib.nn.ModuleDict({"training": lib.nn.ReLU()}),
    lambda lib: lib.nn.ModuleDict({"a": 3}), lambda lib: lib.nn.ModuleDict(3),
    lambda lib: lib.nn.ModuleDict([3]), lambda lib: lib.nn.ModuleDict([("a",)]),
    lambda lib: lib.nn.ModuleDict()["x"], lambda lib: lib.nn.ModuleDict().__delitem__("x"),
    lambda lib: lib.nn.ModuleDict().pop("x"),
    lambda lib: lib.nn.ModuleDict({"a": lib.nn.ReLU()})(lib.zeros(1)),
])
def test_container_errors_match_torch(fn):
    same_error(fn)


def linear(lib):
    return lib.nn.Linear(2, 3)


def module_with_buffer(lib):
    m = lib.nn.Module()
    m.register_buffer("b", lib.zeros(1))
    return m


@pytest.mark.parametrize("fn", [
    lambda lib: setattr(linear(lib), "weight", lib.zeros(3, 2)),
    lambda lib: setattr(linear(lib), "weight", 3),
    lambda lib: setattr(linear(lib), "weight", lib.nn.ReLU()),
    lambda lib: setattr(lib.nn.Linear(2, 3, bias=False), "bias", lib.zeros(3)),
    lambda lib: setattr(seq3(lib), "1", 3),
    lambda lib: setattr(seq3(lib), "1", lib.zeros(1)),
    lambda lib: setattr(module_with_buffer(lib), "b", 3),
    lambda lib: lib.nn.Module().register_parameter(1, None),
    lambda lib: lib.nn.Module().register_parameter("a.b", None),
    lambda lib: lib.nn.Module().register_parameter("", None),
    lambda lib: lib.nn.Module().register_parameter("train", None),
    lambda lib: lib.nn.Module().register_parameter("w", lib.zeros(1)),
    lambda lib: lib.nn.Module().register_buffer("w", 3),
    lambda lib: lib.nn.Module().register_buffer("a.b", lib.zeros(1)),
    lambda lib: lib.nn.Module().add_module("w", 3),
    lambda lib: lib.nn.Module().add_module(1, lib.nn.ReLU()),
    lambda lib: lib.nn.Module().add_module("eval", lib.nn.ReLU()),
    lambda lib: (lambda m: (setattr(m, "x", 3), m.add_module("x", lib.nn.ReLU())))(lib.nn.Module()),
    lambda lib: lib.nn.ReLU().train(1),
    lambda lib: delattr(lib.nn.ReLU(), "missing"),
])
def test_module_assignment_errors_match_torch(fn):
    same_error(fn)


def test_assignment_messages_name_what_was_expected_and_given():
    with pytest.raises(TypeError, match=r"cannot assign 'tinyalex.FloatTensor' as parameter"
                                        r" 'weight' \(tinyalex.nn.Parameter or None expected\)"):
        nn.Linear(2, 3).weight = ta.zeros(3, 2)
    with pytest.raises(TypeError, match=r"cannot assign 'int' as child module '1'"):
        seq3(ta)[1] = 3
    with pytest.raises(TypeError, match=r"^int is not a Module subclass$"):
        nn.ModuleList().append(3)
    with pytest.raises(IndexError, match=r"index 3 is out of range \(a Sequential of 3 modules"
                                         r" takes -3 <= index < 3\)"):
        seq3(ta)[3]
    with pytest.raises(KeyError, match="attribute 'training' already exists"):
        nn.ModuleDict({"training": nn.ReLU()})
    with pytest.raises(ValueError, match="mode: training mode is expected to be boolean, got int"):
        nn.ReLU().train(1)


def test_assignments_move_between_registries_as_in_torch():
    """Each kind of value goes to its own registry and leaves the others, as in torch."""
    for lib in (ta, torch):
        m = lib.nn.Linear(2, 3)
        m.weight = None                                     # stays registered, as None
        assert list(m._parameters) == ["weight", "bias"] and m.weight is None
        m.weight = lib.nn.Parameter(lib.zeros(3, 2))
        assert list(m._parameters) == ["weight", "bias"]
        m.extra = 5
        m.extra = lib.nn.ReLU()                             # a plain attribute becomes a child
        assert m.extra is m._modules["extra"] and "extra" not in m.__dict__
        m.extra = lib.nn.Parameter(lib.zeros(1))            # ... then a parameter
        assert list(m._parameters) == ["weight", "bias", "extra"] and not m._modules
        del m.extra
        assert list(m._parameters) == ["weight", "bias"] and not hasattr(m, "extra")
        m.register_buffer("b", None)
        m.b = lib.ones(1)
        assert list(m._buffers) == ["b"]
        m.b = lib.nn.ReLU()
        assert not m._buffers and list(m._modules) == ["b"]
        del m.b
        assert not m._modules


def test_linear_without_bias_registers_none_as_torch():
    for lib in (ta, torch):
        for layer in (lib.nn.Linear(2, 3, bias=False), lib.nn.Conv2d(1, 2, 3, bias=False)):
            assert list(layer._parameters) == ["weight", "bias"] and layer.bias is None
            assert list(layer.state_dict()) == ["weight"]


def test_a_shared_module_is_traversed_once_but_saved_under_each_name():
    for lib in (ta, torch):
        shared = lib.nn.Linear(1, 1)
        model = lib.nn.Sequential(shared, lib.nn.ReLU(), shared)
        assert [n for n, _ in model.named_modules()] == ["", "0", "1"]
        assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
        assert list(model.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
        calls = []
        model.apply(lambda m: calls.append(type(m).__name__))
        assert calls == ["Linear", "ReLU", "Sequential"]


def test_a_module_with_a_none_buffer_moves_and_casts():
    loss = nn.CrossEntropyLoss()                             # weight buffer is None
    assert loss.to("cpu").double() is loss and list(loss.named_buffers()) == []


def test_insert_on_named_keys_is_a_clear_key_error_before_any_change():
    """torch shifts the keys '0'...'n-1' and fails half way (KeyError '1') when they are
    names; tinyalex checks first and says why."""
    model = nn.Sequential(collections.OrderedDict(a=nn.ReLU(), b=nn.Flatten()))
    with pytest.raises(KeyError, match=r"no key '0' \(keys: \['a', 'b'\]\)"):
        model.insert(0, nn.ReLU())
    assert list(model._modules) == ["a", "b"]
    assert list(model.insert(2, nn.ReLU())._modules) == ["a", "b", "2"]   # as torch


def test_module_list_insert_checks_what_torch_does_not():
    """torch's ModuleList.insert takes a non-Module, and a negative or too large index breaks
    its numbering; here insert follows Sequential.insert."""
    blocks = nn.ModuleList([nn.ReLU(), nn.Flatten()])
    flatten_first = nn.Flatten()
    blocks.insert(-1, flatten_first)
    assert list(blocks._modules) == ["0", "1", "2"] and blocks[1] is flatten_first
    with pytest.raises(IndexError, match="Index out of range: 4"):
        blocks.insert(4, nn.ReLU())
    with pytest.raises(TypeAssertionError, match="ModuleList.insert: module should be of type"
                                              " Module, got int"):
        blocks.insert(0, 3)
    assert isinstance(TypeAssertionError("x"), (TypeError, AssertionError))
    assert len(blocks) == 3


@pytest.mark.parametrize("seed", range(6))
def test_random_edit_sequences_match_torch(seed):
    """Many edits in a row on a Sequential and a ModuleList: after each, the same keys and
    the same layers (told apart by their sizes) in the same order, or the same error."""
    rng = random.Random(seed)

    def fresh(lib, size):
        return lib.nn.Linear(size, size)

    def state(container):
        return [(k, None if m is None else m.in_features) for k, m in container._modules.items()]

    containers = {lib: (lib.nn.Sequential(*(fresh(lib, i + 1) for i in range(3))),
                        lib.nn.ModuleList(fresh(lib, i + 1) for i in range(3))) for lib in (ta, torch)}
    size = 10
    for _ in range(60):
        size += 1
        which = rng.randrange(2)
        n = len(containers[torch][which])
        i = rng.randint(-n - 1, n + 1)
        low = -n if which == 0 else 0                   # torch's ModuleList.insert: 0 <= index <= n
        op = rng.choice([
            lambda lib, c: c.append(fresh(lib, size)),
            lambda lib, c: c.insert(max(low, min(i, n)), fresh(lib, size)),
            lambda lib, c: c.__setitem__(i, fresh(lib, size)),
            lambda lib, c: setattr(c, str(i), fresh(lib, size)) if 0 <= i < n else None,
            lambda lib, c: c.__delitem__(i),
            lambda lib, c: c.__delitem__(slice(i, None, 2)),
            lambda lib, c: c.pop(i),
            lambda lib, c: c.extend([fresh(lib, size), fresh(lib, size + 100)]),
            lambda lib, c: c.__getitem__(i),
            lambda lib, c: c[i:],
        ])
        results = {}
        for lib in (torch, ta):
            try:
                result = op(lib, containers[lib][which])
                results[lib] = ("ok", state(result) if isinstance(result, (lib.nn.Sequential,
                                lib.nn.ModuleList)) else getattr(result, "in_features", None))
            except (IndexError, TypeError) as e:
                results[lib] = ("error", type(e))
        assert results[ta] == results[torch]
        for c_ta, c_torch in zip(containers[ta], containers[torch]):
            assert state(c_ta) == state(c_torch)


def test_non_persistent_buffers_are_refused_by_name():
    with pytest.raises(ValueError, match="persistent: only True is supported"):
        nn.Module().register_buffer("b", ta.zeros(1), persistent=False)
