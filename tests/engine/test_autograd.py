"""The autograd core: PyTorch's backward semantics, graph walking, hooks, no_grad, dtypes."""
import numpy as np
import pytest
import torch

import tinyalex as ta


def test_dtype_rules_follow_torch():
    assert ta.tensor([1.0, 2.0]).dtype == ta.float32
    assert ta.tensor(np.zeros(3)).dtype == ta.float64
    assert ta.tensor(np.zeros(3, np.float32)).dtype == ta.float32
    assert ta.tensor([1, 2]).dtype == ta.int64
    assert ta.tensor([1.0], dtype="float64").dtype == ta.float64
    with pytest.raises(TypeError, match="float32 or float64"):
        ta.tensor(np.zeros(2, np.float16))
    with pytest.raises(TypeError, match="requires_grad"):
        ta.tensor([1, 2], requires_grad=True)


def test_scalar_backward_needs_no_gradient_and_gradients_accumulate():
    x = ta.tensor([1.0, -2.0, 3.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.array([1.0, -2.0, 3.0]) + 3.0)
    with pytest.raises(RuntimeError, match="one element"):
        (x * 2.0).backward()


def test_backward_with_gradient_matches_torch():
    rng = np.random.default_rng(0)
    a, b, gy = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    ta_a, ta_b = ta.tensor(a, requires_grad=True), ta.tensor(b, requires_grad=True)
    t_a, t_b = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    ((ta_a @ ta_b) * (ta_a @ ta_b)).backward(gy)
    ((t_a @ t_b) * (t_a @ t_b)).backward(torch.tensor(gy))
    np.testing.assert_allclose(ta_a.grad.numpy(), t_a.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ta_b.grad.numpy(), t_b.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="gradient: expected shape"):
        (ta_a @ ta_b).backward(np.ones((2, 3)))


def test_diamond_graph_visits_each_node_once_after_all_consumers():
    # y = a * b where both come from x: x's node must get the sum of both paths
    x = ta.tensor([2.0], requires_grad=True)
    h = x * 3.0
    y = (h + 1.0) * (h * h)            # h used by two consumers, created in either order
    y.sum().backward()
    h_val = 6.0
    expected = 3.0 * (h_val * h_val + (h_val + 1.0) * 2 * h_val)
    np.testing.assert_allclose(x.grad.numpy(), [expected])


def test_broadcast_gradients_sum_back_to_operand_shapes():
    rng = np.random.default_rng(1)
    a, b, gy = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1)), rng.standard_normal((2, 3, 4))
    ta_a, ta_b = ta.tensor(a, requires_grad=True), ta.tensor(b, requires_grad=True)
    t_a, t_b = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    (ta_a * ta_b - ta_b / 2.0).backward(gy)
    (t_a * t_b - t_b / 2.0).backward(torch.tensor(gy))
    np.testing.assert_allclose(ta_b.grad.numpy(), t_b.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ta_a.grad.numpy(), t_a.grad.numpy(), rtol=1e-12)


def test_second_backward_needs_retain_graph():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_no_grad_detach_and_numpy():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    with ta.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.grad_fn is None
    z = (x * 2.0).detach()
    assert z.is_leaf and not z.requires_grad
    with pytest.raises(RuntimeError, match="detach"):
        x.numpy()
    assert x.detach().numpy().tolist() == [1.0, 2.0]


def test_tensor_and_leaf_hooks_and_retain_grad():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3.0
    h.retain_grad()
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()) or g * 2.0)
    handle = x.register_hook(lambda g: g + 1.0)
    (h * h).sum().backward()
    np.testing.assert_allclose(seen[0], [6.0, 12.0])
    np.testing.assert_allclose(h.grad.numpy(), [12.0, 24.0])  # retained after the hooks, as in torch
    np.testing.assert_allclose(x.grad.numpy(), [37.0, 73.0])  # 2 * 3 * 2h, then + 1
    handle.remove()
    x.grad = None
    (x * 1.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_post_accumulate_grad_hook_sees_each_gradient_added_to_grad():
    """Like torch's, the hook runs after .grad holds the gradient; a leaf used twice gets
    two calls here (torch sums first and calls once), the second seeing the whole sum."""
    rng = np.random.default_rng(0)
    w = ta.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    x = ta.tensor(rng.standard_normal((4, 3)))
    gy = rng.standard_normal((4, 2))
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (x @ w).backward(ta.tensor(gy))
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], x.numpy().T @ gy)
    seen.clear()
    w.grad = None
    ((x @ w) * (x @ w)).backward(ta.tensor(gy))         # w enters the graph twice
    assert len(seen) == 2
    np.testing.assert_allclose(seen[1], w.grad.numpy())
    tw = torch.tensor(w.detach().numpy(), requires_grad=True)
    tx = torch.tensor(x.numpy())
    ((tx @ tw) * (tx @ tw)).backward(torch.tensor(gy))
    np.testing.assert_allclose(seen[1], tw.grad.numpy())
    handle.remove()
    (x @ w).backward(ta.tensor(gy))
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="expected a leaf tensor that requires grad, got a non-leaf"):
        (w * 2.0).register_post_accumulate_grad_hook(print)
    with pytest.raises(ValueError, match="got one that does not require grad"):
        x.register_post_accumulate_grad_hook(print)


def test_getitem_adds_repeated_indices():
    x = ta.tensor(np.arange(5.0), requires_grad=True)
    x[np.array([0, 0, 3])].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2, 0, 0, 1, 0])


def test_dtype_and_device_mismatch_errors():
    a, b = ta.tensor([1.0]), ta.tensor(np.array([1.0]))
    with pytest.raises(TypeError, match="float32 and float64"):
        a + b
    with pytest.raises(ValueError, match="cannot view"):
        a.reshape(2, 3)


def test_cuda_without_gpu_says_why():
    if ta.cuda_is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="'cuda' is not available"):
        ta.tensor([1.0], device="cuda")
    with pytest.raises(ValueError, match="device"):
        ta.tensor([1.0], device="tpu")


def test_requires_grad_switches_leaves_only():
    x = ta.tensor([1.0, 2.0]).requires_grad_()
    assert x.requires_grad
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    with pytest.raises(TypeError, match="float32/float64"):
        ta.tensor([1, 2]).requires_grad_()
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2.0).requires_grad_(False)


def test_data_is_a_detached_tensor_sharing_storage_as_in_torch():
    w = ta.tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (w * ta.tensor(np.array([0.5, -1.0, 2.0]))).sum().backward()
    data = w.data
    assert isinstance(data, ta.Tensor) and not data.requires_grad and data.grad_fn is None
    w.data[...] = w.data.array - 0.1 * w.grad.data.array       # the tutorials' manual SGD step
    np.testing.assert_allclose(w.detach().numpy(), [0.95, 2.1, 2.8])
    w.data = ta.tensor(np.zeros(2))                              # torch's t.data = other
    assert w.shape == (2,) and w.requires_grad
    with pytest.raises(RuntimeError, match="in place"):
        w[0] = 1.0
    with pytest.raises(TypeError, match="data: expected a Tensor"):
        w.data = np.zeros(2)


class _Returns(ta.autograd.Function):
    """backward returns whatever `make(gy)` builds: one array per input."""
    make = None

    @staticmethod
    def forward(*arrays):
        return arrays[0] * 1.0, None

    @staticmethod
    def backward(gy, cache, needs_input_grad):
        return _Returns.make(gy)


def test_a_fresh_first_gradient_becomes_grad_uncopied_and_a_shared_one_is_copied():
    import weakref
    a, b = (ta.tensor(v, dtype=ta.float64, requires_grad=True) for v in ([1.0, 2.0], [3.0, 4.0]))
    made = []

    def fresh(gy):
        out = gy * 2.0, np.ones(2) * 5.0                  # nothing else refers to these
        made[:] = [weakref.ref(g) for g in out]
        return out
    _Returns.make = staticmethod(fresh)
    _Returns.apply(a, b).sum().backward()
    assert made[0]() is a.grad.array and made[1]() is b.grad.array     # torch steals them too

    kept = []
    shared = np.array([7.0, 8.0])
    for make in (lambda gy: (gy, gy),                   # gy itself, for both inputs
                 lambda gy: (shared, shared * 1.0),     # an array someone else holds
                 lambda gy: kept.append(gy * 1.0) or (kept[-1], gy * 1.0),
                 lambda gy: (np.ones(4)[:2], np.ones((2, 2))[:, 0].copy()),  # a slice's base
                 lambda gy: ((g := np.ones(2) * 3.0), g)):                   # one array twice
        a.grad = b.grad = None
        _Returns.make = staticmethod(make)
        _Returns.apply(a, b).sum().backward()
        assert not np.shares_memory(a.grad.array, b.grad.array)
        assert not np.shares_memory(a.grad.array, shared) and not any(
            np.shares_memory(a.grad.array, k) for k in kept)
        a.grad.array += 100.0                            # writes reach no one else's array
    np.testing.assert_array_equal(shared, [7.0, 8.0])
    assert all(not np.any(k >= 100.0) for k in kept)


def test_a_leaf_roots_gradient_argument_is_copied_into_grad():
    x = ta.tensor([1.0, 2.0], requires_grad=True)
    gradient = np.array([0.5, 0.25])
    x.backward(gradient)
    x.backward(gradient)                                 # accumulates into x.grad, not gradient
    np.testing.assert_array_equal(gradient, [0.5, 0.25])
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.5])


def test_an_activation_that_no_backward_saved_is_freed_during_forward():
    """As in torch, the graph keeps what backward saved, not every input: ReLU saves its
    output, so the array of its input h is freed once the caller drops h. (gc.collect:
    when F.relu's call compiles a Numba kernel, Numba leaves the call's frames, which hold
    h's array, in a reference cycle for the collector; the graph, reachable from y,
    would keep it through any collection.)"""
    import gc
    import weakref
    import tinyalex.functional as F
    x = ta.tensor(np.array([[-1.0, 2.0], [3.0, -4.0]]), requires_grad=True)
    h = x * 2.0
    freed = weakref.ref(h.array)
    y = F.relu(h)
    del h
    gc.collect()
    assert freed() is None
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 2.0], [2.0, 0.0]])
