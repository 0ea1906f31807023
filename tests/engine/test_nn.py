"""tinyalex.nn and tinyalex.optim against torch: names, init, modes, update rules, hooks."""
import numpy as np
import pytest
import torch
import torch.nn as tnn

import tinyalex as ta
import tinyalex.nn as nn
import tinyalex.optim as optim


def small(lib):
    return lib.Sequential(lib.Conv2d(3, 4, 3, padding=1), lib.ReLU(), lib.MaxPool2d(2),
                          lib.Flatten(), lib.Linear(4 * 4 * 5, 3))


def test_state_dict_keys_shapes_and_init_scale_match_torch():
    ours, theirs = small(nn), small(tnn)
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key in ours_state:
        assert ours_state[key].shape == tuple(theirs_state[key].shape), key
        assert ours_state[key].dtype == ta.float32
    # PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
    w = ours[4].weight.detach().numpy()
    bound = 1 / np.sqrt(80)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.1 * bound


def test_load_state_dict_round_trips_and_refuses_mismatches():
    a, b = small(nn), small(nn)
    b.load_state_dict(a.state_dict())
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=k)
    b.load_state_dict(small(tnn).state_dict())          # torch tensors load too
    state = a.state_dict()
    state["0.weight"] = np.zeros((4, 3, 2, 2), np.float32)
    with pytest.raises(ValueError, match="0.weight: expected shape") as info:
        b.load_state_dict(state)
    assert isinstance(info.value, RuntimeError)                     # torch raises RuntimeError
    with pytest.raises(KeyError, match="Missing key") as info:
        b.load_state_dict({"0.weight": a.state_dict()["0.weight"]})
    assert isinstance(info.value, RuntimeError)


def test_load_state_dict_names_missing_and_unexpected_keys_like_torch():
    a, b = small(nn), small(nn)
    state = a.state_dict()
    del state["0.bias"]
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(RuntimeError) as info:
        b.load_state_dict(state)
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert 'Missing key(s) in state_dict: "0.bias".' in message
    assert 'Unexpected key(s) in state_dict: "extra.weight".' in message
    torch_model = small(tnn)
    torch_state = torch_model.state_dict()
    del torch_state["0.bias"]
    torch_state["extra.weight"] = torch.zeros(3)
    with pytest.raises(RuntimeError) as theirs:                     # torch's words, for comparison
        torch_model.load_state_dict(torch_state)
    assert "Missing key(s)" in str(theirs.value) and "Unexpected key(s)" in str(theirs.value)
    result = b.load_state_dict(state, strict=False)                 # not strict: loads the rest
    assert result.missing_keys == ["0.bias"] and result.unexpected_keys == ["extra.weight"]


def test_train_eval_and_dropout_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    assert model.training and model[1].training
    model.eval()
    assert not model[1].training
    x = ta.tensor(np.ones((2, 4), np.float32))
    np.testing.assert_array_equal(model(x).detach().numpy(), model[0](x).detach().numpy())


@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(lr=0.05, momentum=0.5, dampening=0.3),
])
def test_sgd_matches_torch(kwargs):
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((3, 4))
    ours, theirs = ta.tensor(p0, requires_grad=True), torch.tensor(p0, requires_grad=True)
    opt, topt = optim.SGD([ours], **kwargs), torch.optim.SGD([theirs], **kwargs)
    for _ in range(4):
        g = rng.standard_normal((3, 4))
        ours.grad, theirs.grad = ta.tensor(g), torch.tensor(g)
        opt.step()
        topt.step()
    np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12)


@pytest.mark.cuda_emulated
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [
    dict(lr=0.1, weight_decay=1e-2),
    dict(lr=0.05, momentum=0.9, weight_decay=5e-4),
    dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(lr=0.05, momentum=0.5, dampening=0.3),
])
def test_sgd_fused_cuda_step_equals_the_array_path(emulated_cuda, kwargs, dtype):
    """On CUDA, SGD.step runs kernels/sgd.cu (here through the emulator): the same bits as
    the CPU's array expressions, from the first step on, and across a state_dict resume."""
    rng = np.random.default_rng(2)
    p0, grads = rng.standard_normal((5, 7)).astype(dtype), rng.standard_normal((4, 5, 7)).astype(dtype)

    def run(p, opt, steps):
        for g in steps:
            p.grad = ta.tensor(g if p.device == "cpu" else emulated_cuda.asarray(g))
            opt.step()

    cpu = ta.tensor(p0, requires_grad=True)
    cpu_opt = optim.SGD([cpu], **kwargs)
    run(cpu, cpu_opt, grads)
    gpu = ta.tensor(emulated_cuda.asarray(p0), requires_grad=True)
    assert gpu.device == "cuda"
    gpu_opt = optim.SGD([gpu], **kwargs)
    run(gpu, gpu_opt, grads[:2])
    resumed = optim.SGD([gpu], **kwargs)
    resumed.load_state_dict(gpu_opt.state_dict())
    run(gpu, resumed, grads[2:])
    np.testing.assert_array_equal(gpu.detach().cpu().numpy(), cpu.detach().numpy())
    if kwargs.get("momentum"):
        np.testing.assert_array_equal(resumed.state_dict()["state"][0]["momentum_buffer"],
                                      cpu_opt.state_dict()["state"][0]["momentum_buffer"])


def test_sgd_state_dict_resumes_identically():
    rng = np.random.default_rng(1)
    p0, grads = rng.standard_normal(5), rng.standard_normal((6, 5))

    def run(steps, p, opt):
        for g in steps:
            p.grad = ta.tensor(g)
            opt.step()

    a = ta.tensor(p0, requires_grad=True)
    opt_a = optim.SGD([a], lr=0.1, momentum=0.9)
    run(grads, a, opt_a)
    b = ta.tensor(p0, requires_grad=True)
    opt_b = optim.SGD([b], lr=0.1, momentum=0.9)
    run(grads[:3], b, opt_b)
    c = ta.tensor(b.detach().numpy().copy(), requires_grad=True)
    opt_c = optim.SGD([c], lr=0.5, momentum=0.1)
    opt_c.load_state_dict(opt_b.state_dict())
    run(grads[3:], c, opt_c)
    np.testing.assert_array_equal(a.detach().numpy(), c.detach().numpy())


def test_lr_schedulers_match_torch():
    for make, tmake, metrics in [
        (lambda o: optim.lr_scheduler.StepLR(o, 2, 0.1), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.1), None),
        (lambda o: optim.lr_scheduler.ReduceLROnPlateau(o, "min", 0.1, patience=1),
         lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, "min", 0.1, patience=1),
         [1.0, 0.9, 0.95, 0.95, 0.95, 0.8, 0.85, 0.9, 0.9]),
    ]:
        opt = optim.SGD([ta.tensor([1.0], requires_grad=True)], lr=0.1)
        topt = torch.optim.SGD([torch.tensor([1.0], requires_grad=True)], lr=0.1)
        sched, tsched = make(opt), tmake(topt)
        for m in metrics or [None] * 7:
            opt.step()
            topt.step()
            sched.step(*([m] if m is not None else []))
            tsched.step(*([m] if m is not None else []))
            assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"])


def test_module_forward_and_full_backward_hooks_match_torch():
    rng = np.random.default_rng(2)
    x, gy = rng.standard_normal((2, 3)), rng.standard_normal((2, 4))
    records = {}
    for lib, tensor in ((nn, lambda a: ta.tensor(a, requires_grad=True)),
                        (tnn, lambda a: torch.tensor(a, requires_grad=True))):
        layer = lib.Linear(3, 4).double()
        layer.weight.data[...] = 0.5  # same weights in both, written as torch users do
        layer.bias.data[...] = 0.1
        seen = {}
        layer.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out * 2))
        layer.register_full_backward_hook(
            lambda m, gin, gout: seen.update(gin=gin[0] * 1, gout=gout[0] * 1))
        y = layer(tensor(x))
        y.backward(tensor(gy) if lib is nn else torch.tensor(gy))
        records[lib.__name__] = {k: np.asarray(v.detach().numpy()) for k, v in seen.items()}
    ours, theirs = records["tinyalex.nn"], records["torch.nn"]
    for key in ("out", "gin", "gout"):
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, err_msg=key)


def test_module_to_dtype_and_zero_grad():
    model = small(nn).double()
    assert all(p.dtype == ta.float64 for p in model.parameters())
    y = model(ta.tensor(np.ones((2, 3, 8, 10))))
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
