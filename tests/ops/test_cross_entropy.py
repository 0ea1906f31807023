"""cross_entropy on every kernel set: the kernels against torch (logits of +-1e3, torch's
options, every row ignored, an empty batch), the numba set against the reference, and the
public API."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinyalex as ta
import tinyalex.functional as F
import tinyalex.kernels.numba as numba_kernels
import tinyalex.kernels.numba.cross_entropy as numba_cross_entropy
import tinyalex.kernels.numpy as numpy_kernels

from helpers import check_parity
from op_helpers import DTYPES, assert_close, assert_matches, f64, fd_settings, gradcheck, torch_vjp


# weight, ignore_index (None: no row ignored), label_smoothing, probability targets
# weight, ignore_index (None: no row ignored), label_smoothing, probability targets
CE_OPTIONS = {
    "weight": dict(weight=True),
    "ignore_index": dict(ignore_index=2),
    "ignore_index valid class -100": dict(ignore_index=-100, ignore_rows=True),
    "label_smoothing": dict(label_smoothing=0.3),
    "weight, ignore_index and smoothing": dict(weight=True, ignore_index=1, label_smoothing=0.2),
    "probabilities": dict(probabilities=True),
    "probabilities, weight and smoothing": dict(probabilities=True, weight=True, label_smoothing=0.25),
}


def ce_case(rng, N, C, dtype, options, scale=1.0):
    """logits, target, weight and the kernel keywords of one option set."""
    logits = (scale * rng.standard_normal((N, C))).astype(dtype)
    weight = rng.uniform(0.2, 2.0, C).astype(dtype) if options.get("weight") else None
    ignore_index = options.get("ignore_index", -100)
    if options.get("probabilities"):
        target = rng.uniform(0.0, 1.0, (N, C))
        target = (target / target.sum(axis=1, keepdims=True)).astype(dtype)
    else:
        target = rng.integers(0, C, size=N)
        if "ignore_index" in options:
            target[::3] = ignore_index                                 # some rows ignored
    keywords = dict(weight=weight, ignore_index=ignore_index,
                    label_smoothing=options.get("label_smoothing", 0.0))
    return logits, target, keywords


def torch_cross_entropy(target, reduction, weight, ignore_index, label_smoothing):
    t = torch.from_numpy(target.astype(np.float64) if target.dtype.kind == "f" else target)
    w = None if weight is None else torch.from_numpy(weight.astype(np.float64))
    return lambda z: TF.cross_entropy(z, t, w, ignore_index=ignore_index, reduction=reduction,
                                     label_smoothing=label_smoothing)


class TestKernels:
    """Kernel level: each kernel set's raw kernels (the `kernels` fixture) against torch."""

    # 5 classes: one warp per row on CUDA; 70: three warps, so the block reduction's shared
    # partials and barriers are exercised.
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("scale", [1.0, 1e3])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("C", [5, 70])
    def test_cross_entropy_matches_torch(self, kernels, C, reduction, scale, dtype):
        rng = np.random.default_rng(7)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        N = 6
        logits = (scale * rng.standard_normal((N, C))).astype(dtype)
        target = rng.integers(0, C, size=N)  # int64, with repeated classes
        gloss = rng.standard_normal(N if reduction == "none" else ()).astype(dtype)

        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction)
        glogits = K.cross_entropy_backward(dev(gloss), cache)

        def cross_entropy(logits):
            return TF.cross_entropy(logits, torch.from_numpy(target), reduction=reduction)

        loss_t, (glogits_t,) = torch_vjp(cross_entropy, [logits], gloss)
        loss, glogits = host(loss), host(glogits)
        assert loss.shape == loss_t.shape
        assert np.isfinite(loss).all() and np.isfinite(glogits).all()
        assert_close(loss, loss_t, dtype)
        assert_close(glogits, glogits_t, dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("scale", [1.0, 1e3])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("options", list(CE_OPTIONS))
    def test_cross_entropy_options_match_torch(self, kernels, options, reduction, scale, dtype):
        rng = np.random.default_rng(17)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        logits, target, keywords = ce_case(rng, 7, 5, dtype, CE_OPTIONS[options], scale)
        gloss = rng.standard_normal(7 if reduction == "none" else ()).astype(dtype)
        weight = keywords["weight"]
        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction,
                                              None if weight is None else dev(weight),
                                              keywords["ignore_index"], keywords["label_smoothing"])
        glogits = K.cross_entropy_backward(dev(gloss), cache)
        loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, **keywords), [logits], gloss)
        loss, glogits = host(loss), host(glogits)
        assert loss.shape == loss_t.shape
        assert np.isfinite(loss).all() and np.isfinite(glogits).all()
        assert_close(loss, loss_t, dtype)
        assert_close(glogits, glogits_t, dtype)
        np.testing.assert_array_equal(host(K.cross_entropy_backward(dev(gloss), cache)), glogits)

    @pytest.mark.parametrize("options", ["ignore_index", "weight, ignore_index and smoothing"])
    def test_cross_entropy_of_many_short_rows(self, kernels, options):
        """300 rows of 3 classes: a block of kernels/cross_entropy.cu's backward (256
        elements) stages the factors of 86 rows."""
        rng = np.random.default_rng(23)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        logits, target, keywords = ce_case(rng, 300, 3, np.float64, CE_OPTIONS[options])
        gloss = rng.standard_normal(300)
        weight = keywords["weight"]
        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), "none",
                                              None if weight is None else dev(weight),
                                              keywords["ignore_index"], keywords["label_smoothing"])
        glogits = K.cross_entropy_backward(dev(gloss), cache)
        loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, "none", **keywords), [logits], gloss)
        assert_close(host(loss), loss_t, np.float64)
        assert_close(host(glogits), glogits_t, np.float64)

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("options", ["weight, ignore_index and smoothing",
                                         "probabilities, weight and smoothing"])
    def test_cross_entropy_rows_longer_than_the_register_cache(self, kernels, options, dtype):
        """2100 classes: more than the 8 logits per thread x 256 threads that
        kernels/cross_entropy.cu's forward keeps in registers, in every pass."""
        rng = np.random.default_rng(19)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        logits, target, keywords = ce_case(rng, 3, 2100, dtype, CE_OPTIONS[options], 3.0)
        gloss = rng.standard_normal(3).astype(dtype)
        weight = keywords["weight"]
        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), "none", dev(weight),
                                              keywords["ignore_index"], keywords["label_smoothing"])
        glogits = K.cross_entropy_backward(dev(gloss), cache)
        loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, "none", **keywords), [logits], gloss)
        assert_close(host(loss), loss_t, dtype)
        assert_close(host(glogits), glogits_t, dtype)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("label_smoothing", [0.0, 0.4])
    def test_cross_entropy_all_rows_ignored_is_nan_like_torch(self, kernels, reduction, label_smoothing):
        """'mean' over no counted row is 0/0 = NaN in torch; the gradient is still exactly 0."""
        rng = np.random.default_rng(18)
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        logits, target = rng.standard_normal((4, 3)), np.full(4, 1)
        weight = rng.uniform(0.5, 1.5, 3)
        gloss = rng.standard_normal(4 if reduction == "none" else ())
        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction, dev(weight), 1,
                                              label_smoothing)
        glogits = host(K.cross_entropy_backward(dev(gloss), cache))
        loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, weight, 1,
                                                             label_smoothing), [logits], gloss)
        np.testing.assert_array_equal(host(loss), loss_t)                 # NaN for 'mean'; 0 otherwise
        assert (np.isnan(host(loss)).all() if reduction == "mean" else not host(loss).any())
        np.testing.assert_array_equal(glogits, glogits_t)
        assert not glogits.any()

    @pytest.mark.parametrize("probabilities", [False, True])
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    def test_cross_entropy_of_an_empty_batch_is_torchs(self, kernels, reduction, probabilities):
        K, dev, host = kernels.module, kernels.to_device, kernels.to_numpy
        logits = np.zeros((0, 4))
        target = np.zeros((0, 4)) if probabilities else np.zeros(0, dtype=np.int64)
        loss, cache = K.cross_entropy_forward(dev(logits), dev(target), reduction)
        gloss = np.zeros(0) if reduction == "none" else np.array(0.7)
        glogits = host(K.cross_entropy_backward(dev(gloss), cache))
        loss_t, (glogits_t,) = torch_vjp(torch_cross_entropy(target, reduction, None, -100, 0.0),
                                         [logits], gloss)
        assert host(loss).shape == loss_t.shape and glogits.shape == (0, 4)
        np.testing.assert_array_equal(host(loss), loss_t)                 # nan, 0 and (0,)


class TestNumbaKernels:
    """The numba set against the numpy reference, over seeds."""

    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("parallel", [True, False])
    @pytest.mark.parametrize("seed", range(6))
    def test_cross_entropy_matches_reference(self, monkeypatch, seed, parallel, reduction, dtype):
        """Plain, and with torch's options drawn per seed: weight, ignore_index (also every row
        ignored), label smoothing, class-probability targets."""
        monkeypatch.setattr(numba_cross_entropy, "PARALLEL_MIN_ELEMENTS", 0 if parallel else 10**9)
        rng = np.random.default_rng(500 + seed)
        N, C = int(rng.integers(2, 20)), int(rng.integers(2, 12))
        logits = (rng.choice([1.0, 1e3]) * rng.standard_normal((N, C))).astype(dtype)  # +-1e3 must not overflow
        target = rng.integers(0, C, size=N)
        options = {} if seed == 0 else dict(
            weight=rng.uniform(0.2, 2.0, C).astype(dtype) if rng.random() < 0.6 else None,
            ignore_index=int(target[0]), label_smoothing=float(rng.choice([0.0, 0.15, 0.5])))
        if seed == 5:
            target[:] = options["ignore_index"]                            # every row ignored: NaN mean
        if seed == 4:
            target = rng.uniform(0.0, 1.0, (N, C)).astype(dtype)           # class probabilities
            options["ignore_index"] = -100

        loss, cache = numba_kernels.cross_entropy_forward(logits, target, reduction, **options)
        options_ref = dict(options, weight=f64(options.get("weight")))
        target_ref = f64(target) if target.dtype.kind == "f" else target
        loss_ref, cache_ref = numpy_kernels.cross_entropy_forward(f64(logits), target_ref, reduction, **options_ref)
        if seed == 5 and reduction == "mean":
            assert np.isnan(loss) and np.isnan(loss_ref)
        else:
            assert_matches(np.asarray(loss), np.asarray(loss_ref), dtype)

        gloss = rng.standard_normal(N if reduction == "none" else ())
        glogits = numba_kernels.cross_entropy_backward(gloss.astype(dtype), cache)
        assert_matches(glogits, numpy_kernels.cross_entropy_backward(gloss, cache_ref), dtype)
        np.testing.assert_array_equal(numba_kernels.cross_entropy_backward(gloss.astype(dtype), cache), glogits)


class TestFunctional:
    """Through the public API, on every kernel set: float64 finite differences and torch parity."""

    @fd_settings
    @given(n=st.integers(2, 6), c=st.integers(2, 7), scale=st.sampled_from([1.0, 30.0]),
           reduction=st.sampled_from(["mean", "sum", "none"]), seed=st.integers(0, 99))
    def test_cross_entropy_finite_differences(self, kernels, n, c, scale, reduction, seed):
        rng = np.random.default_rng(seed)
        logits, target = rng.standard_normal((n, c)) * scale, rng.integers(0, c, n)
        target = ta.tensor(kernels.to_device(target))
        gradcheck(kernels, lambda z: F.cross_entropy(z, target, reduction=reduction), [logits],
                  atol=1e-6)

    @fd_settings
    @given(n=st.integers(2, 6), c=st.integers(2, 7), reduction=st.sampled_from(["mean", "sum", "none"]),
           weighted=st.booleans(), smoothing=st.sampled_from([0.0, 0.1, 0.6]),
           form=st.sampled_from(["indices", "ignore", "probabilities"]), seed=st.integers(0, 99))
    def test_cross_entropy_options_finite_differences(self, kernels, n, c, reduction, weighted, smoothing,
                                                      form, seed):
        rng = np.random.default_rng(seed)
        logits = rng.standard_normal((n, c)) * 3
        weight = ta.tensor(kernels.to_device(rng.uniform(0.2, 2.0, c))) if weighted else None
        ignore_index = -100
        if form == "probabilities":
            target = rng.uniform(0.0, 1.0, (n, c))
            target /= target.sum(axis=1, keepdims=True)
        else:
            target = rng.integers(0, c, n)
            if form == "ignore":
                ignore_index = int(target[0])                              # a real class, ignored
        target = ta.tensor(kernels.to_device(target))
        gradcheck(kernels, lambda z: F.cross_entropy(z, target, weight, ignore_index=ignore_index,
                                                     reduction=reduction, label_smoothing=smoothing),
                  [logits], atol=1e-6)

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("scale", [1.0, 1e3])
    def test_cross_entropy_matches_torch_for_huge_logits(self, kernels, reduction, scale):
        rng = np.random.default_rng(6)
        logits, target = rng.standard_normal((6, 10)) * scale, rng.integers(0, 10, 6)
        check_parity(kernels, lambda z: F.cross_entropy(z, ta.tensor(kernels.to_device(target)), reduction=reduction),
                     lambda z: TF.cross_entropy(z, torch.tensor(target), reduction=reduction), [logits])

    @pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
    @pytest.mark.parametrize("options", [
        dict(weight=True),
        dict(ignore_index=3),
        dict(label_smoothing=0.1),
        dict(weight=True, ignore_index=0, label_smoothing=0.3),
        dict(probabilities=True),
        dict(probabilities=True, weight=True, label_smoothing=0.2),
    ], ids=["weight", "ignore_index", "label_smoothing", "all three", "probabilities",
            "probabilities+weight+smoothing"])
    def test_cross_entropy_options_match_torch(self, kernels, options, reduction):
        rng = np.random.default_rng(20)
        N, C = 9, 6
        logits = rng.standard_normal((N, C)) * 4
        weight = rng.uniform(0.2, 2.0, C) if options.get("weight") else None
        ignore_index = options.get("ignore_index", -100)
        if options.get("probabilities"):
            target = rng.uniform(0.0, 1.0, (N, C))
            target /= target.sum(axis=1, keepdims=True)
        else:
            target = rng.integers(0, C, N)
            target[::4] = ignore_index if "ignore_index" in options else target[::4]
        smoothing = options.get("label_smoothing", 0.0)

        def ours(z):
            t = ta.tensor(kernels.to_device(target.astype(z.dtype) if target.dtype.kind == "f" else target))
            w = None if weight is None else ta.tensor(kernels.to_device(weight.astype(z.dtype)))
            return F.cross_entropy(z, t, w, ignore_index=ignore_index, reduction=reduction,
                                   label_smoothing=smoothing)

        def theirs(z):
            w = None if weight is None else torch.tensor(weight)
            return TF.cross_entropy(z, torch.tensor(target), w, ignore_index=ignore_index,
                                    reduction=reduction, label_smoothing=smoothing)

        check_parity(kernels, ours, theirs, [logits])
        check_parity(kernels, ours, theirs, [logits], dtype=np.float64)

    def test_cross_entropy_loss_layer_takes_torchs_arguments(self, kernels):
        rng = np.random.default_rng(21)
        logits, target, weight = rng.standard_normal((5, 4)), rng.integers(0, 4, 5), rng.uniform(0.5, 2, 4)
        target[1] = 2
        ours = ta.nn.CrossEntropyLoss(weight=ta.tensor(kernels.to_device(weight)), ignore_index=2,
                                      label_smoothing=0.2)
        theirs = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight), ignore_index=2, label_smoothing=0.2)
        loss = ours(ta.tensor(kernels.to_device(logits)), ta.tensor(kernels.to_device(target)))
        np.testing.assert_allclose(loss.item(), theirs(torch.tensor(logits), torch.tensor(target)).item(),
                                   rtol=1e-12)
        assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
        with pytest.raises(ValueError, match="size_average"):
            ta.nn.CrossEntropyLoss(size_average=True)
