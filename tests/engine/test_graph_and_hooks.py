"""The autograd graph as ``tinyalex graph`` draws it (tinyalex.viz), and the module hooks
that observe a model run, on the CPU AlexNet."""
import re
import shutil

import numpy as np
import pytest

import tinyalex as ta
import tinyalex.functional as F
from tinyalex.train import cli
from tinyalex import viz
from tinyalex.train.models import cpu_alexnet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_batch_loss(model, seed=0):
    """Cross-entropy of `model` on a fixed batch of 2 (dropout seeded too)."""
    ta.manual_seed(seed)
    x = ta.tensor(np.random.default_rng(seed).standard_normal((2, 1, 28, 28)).astype(np.float32))
    return F.cross_entropy(model(x), ta.tensor([1, 7]))


def check_dot_syntax(dot):
    """A digraph of attribute, node and edge statements, whose edges join declared nodes."""
    lines = dot.rstrip("\n").split("\n")
    assert lines[0] == "digraph tinyalex {" and lines[-1] == "}"
    declared, edges = set(), []
    for line in lines[1:-1]:
        edge = re.fullmatch(r"  (\w+) -> (\w+);", line)
        node = re.fullmatch(r'  (\w+) \[(.*)\];', line)
        if edge:
            edges.append(edge.groups())
        elif node:
            assert node.group(2).count('"') % 2 == 0, line
            declared.add(node.group(1))
        else:
            assert re.fullmatch(r'  \w+="?[\w ]*"?;', line), f"not a DOT statement: {line!r}"
    assert edges and all(a in declared and b in declared for a, b in edges)


def test_graph_dump_names_ops_shapes_and_parameters():
    model = cpu_alexnet()
    loss = small_batch_loss(model)
    dot = viz.graph(loss, params=dict(model.named_parameters()))
    check_dot_syntax(dot)
    for label in ("Conv2d\\n(2, 32, 28, 28)", "LocalResponseNorm\\n(2, 32, 28, 28)",
                  "MaxPool2d\\n(2, 32, 13, 13)", "Linear\\n(2, 10)", "CrossEntropy\\n()",
                  "input\\n(2, 1, 28, 28)", "features.0.weight\\n(32, 1, 5, 5)"):
        assert f'label="{label}"' in dot, label
    for name, _ in model.named_parameters():
        assert f'label="{name}\\n' in dot, name
    with pytest.raises(TypeError, match="tinyalex.Tensor"):
        viz.graph(np.zeros(3))


def test_graph_dump_renders_with_graphviz(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's `dot` program is not installed (apt-get install graphviz)")
    model = cpu_alexnet()
    png = tmp_path / "graph.png"
    viz.render(viz.graph(small_batch_loss(model), params=dict(model.named_parameters())), png)
    assert png.read_bytes().startswith(PNG_MAGIC)


def test_forward_and_full_backward_hooks_fire_in_a_model_run():
    model = cpu_alexnet()
    conv1, pool1, conv2 = model.features[0], model.features[3], model.features[4]
    events, seen = [], {}

    def forward_hook(name):
        def hook(module, args, y):
            events.append((name, "forward"))
            y.retain_grad()  # to compare with grad_output
            seen[name] = y
        return hook

    def backward_hook(name):
        def hook(module, grad_input, grad_output):
            events.append((name, "backward"))
            seen[name + " grads"] = (grad_input, grad_output)
        return hook

    handles = [pool1.register_forward_hook(forward_hook("pool1"))]  # pool1 feeds conv2
    for name, conv in (("conv1", conv1), ("conv2", conv2)):
        handles += [conv.register_forward_hook(forward_hook(name)),
                    conv.register_full_backward_hook(backward_hook(name))]
    small_batch_loss(model).backward()
    assert [e for e in events if e[0] != "pool1"] == [("conv1", "forward"), ("conv2", "forward"),
                                                      ("conv2", "backward"), ("conv1", "backward")]

    grad_input, grad_output = seen["conv1 grads"]
    assert grad_input == (None,)  # the images need no gradient: None, as torch gives
    assert grad_output[0].shape == (2, 32, 28, 28)
    np.testing.assert_array_equal(grad_output[0].array, seen["conv1"].grad.array)
    grad_input, grad_output = seen["conv2 grads"]
    assert grad_input[0].shape == (2, 32, 13, 13) and grad_output[0].shape == (2, 64, 13, 13)
    np.testing.assert_array_equal(grad_input[0].array, seen["pool1"].grad.array)
    np.testing.assert_array_equal(grad_output[0].array, seen["conv2"].grad.array)

    # hooks that return None only observe: the same step without them gives the same gradients
    hooked_grads = {name: p.grad.array.copy() for name, p in model.named_parameters()}
    for handle in handles:
        handle.remove()
    events.clear()
    model.zero_grad()
    small_batch_loss(model).backward()
    assert events == []
    for name, p in model.named_parameters():
        np.testing.assert_array_equal(p.grad.array, hooked_grads[name], err_msg=name)


def test_graph_command_prints_dot_and_explains_a_missing_graphviz(tmp_path, capsys):
    assert cli.main(["graph", "--out", str(tmp_path / "g.dot")]) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph") and "features.0.weight" in dot and "CrossEntropy" in dot
    if shutil.which("dot") is None:
        assert cli.main(["graph", "--png", str(tmp_path / "g.png")]) == 2
        assert "Graphviz" in capsys.readouterr().err
    else:
        assert cli.main(["graph", "--png", str(tmp_path / "g.png")]) == 0
        assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
