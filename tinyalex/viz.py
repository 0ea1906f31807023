"""Graph inspection: the recorded define-by-run graph as Graphviz DOT text.

    dot = tinyalex.viz.graph(loss, params=dict(model.named_parameters()))
    tinyalex.viz.render(dot, "graph.png")      # needs Graphviz's `dot` program

Op nodes (boxes) show the Function and its output shape; leaves (ellipses) show the
parameter's name when given, and the shape. Edges run from inputs to the op that used them,
the direction of the forward pass; backward walks them in reverse.
"""
import shutil
import subprocess

from tinyalex.tensor import Tensor


def graph(tensor, params=None):
    """DOT text of the graph that produced `tensor`. params: {name: Tensor} for labels."""
    if not isinstance(tensor, Tensor):
        raise TypeError(f"graph: tensor: expected a tinyalex.Tensor, got {type(tensor).__name__}")
    names = {id(t): name for name, t in (params or {}).items()}
    lines = ["digraph tinyalex {", '  rankdir="TB";', '  node [fontname="Helvetica", fontsize=10];']
    seen = set()

    def shape_text(shape):
        return str(tuple(int(n) for n in shape))

    def leaf_id(t):
        key = f"leaf{id(t)}"
        if key not in seen:
            seen.add(key)
            label = names.get(id(t), "input" if not t.requires_grad else "tensor")
            style = ', style=filled, fillcolor="lightblue"' if id(t) in names else ""
            lines.append(f'  {key} [shape=ellipse, label="{label}\\n{shape_text(t.shape)}"{style}];')
        return key

    stack, root = [tensor.grad_fn], tensor.grad_fn
    if root is None:
        leaf_id(tensor)
    while stack:
        node = stack.pop()
        key = f"op{id(node)}"
        if key in seen:
            continue
        seen.add(key)
        lines.append(f'  {key} [shape=box, label="{node.name()}\\n{shape_text(node.shape)}"];')
        for t in node.inputs:
            if t.grad_fn is not None:
                lines.append(f"  op{id(t.grad_fn)} -> {key};")
                stack.append(t.grad_fn)
            else:
                lines.append(f"  {leaf_id(t)} -> {key};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_text, path):
    """Render DOT text to a PNG with Graphviz's `dot`; a clear error when it is missing."""
    dot = shutil.which("dot")
    if dot is None:
        raise RuntimeError("render: Graphviz's `dot` program was not found "
                           "(install it with `apt-get install graphviz`), or save the DOT text instead")
    subprocess.run([dot, "-Tpng", "-o", str(path)], input=dot_text.encode(), check=True)
