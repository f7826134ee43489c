"""Tf-KD losses against an independent float64 reference (tfkd_method.md section 2).

The reference below is written from the formulas with plain Python loops and `math`; it does not call
tfkd_search. The published numbers of tfkd_method.md 2.3/2.4 are checked against the package.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from tfkd_search.errors import ConfigError
from tfkd_search.losses import ce_loss, kd_loss, lsr_loss, manual_teacher, tfkd_reg_loss

# ---------------------------------------------------------------------------------------------------
# Independent float64 reference (lists of floats, math only)


def _softmax(v: list[float]) -> list[float]:
    finite = [x for x in v if x != -math.inf]
    mx = max(finite)
    e = [math.exp(x - mx) if x != -math.inf else 0.0 for x in v]
    s = sum(e)
    return [x / s for x in e]


def _log_softmax(v: list[float]) -> list[float]:
    mx = max(v)
    lse = mx + math.log(sum(math.exp(x - mx) for x in v))
    return [x - lse for x in v]


def _kl_row(t: list[float], s_logp: list[float]) -> float:
    """sum_k t_k (log t_k - log s_k), with 0 log 0 = 0."""
    return sum(tk * (math.log(tk) - lk) for tk, lk in zip(t, s_logp) if tk > 0.0)


def _ref_ce(z: np.ndarray, y: np.ndarray) -> float:
    n = z.shape[0]
    return sum(-_log_softmax(list(z[i]))[int(y[i])] for i in range(n)) / n


def _ref_teacher_pd(yi: int, c: int, a: float) -> list[float]:
    return [a if k == yi else (1.0 - a) / (c - 1) for k in range(c)]


def _ref_kl(teachers: list[list[float]], z: np.ndarray, tau_student: float, mode: str
            ) -> tuple[float, float]:
    """(KL, magnitude): magnitude is sum |t log t| + |t log s| with the KL's normalisation; float32
    cancellation makes the KL's absolute error a small multiple of eps32 * magnitude."""
    n, c = z.shape
    total = mag = 0.0
    for i in range(n):
        logs = _log_softmax([x / tau_student for x in z[i]])
        total += _kl_row(teachers[i], logs)
        mag += sum(abs(t * math.log(t)) + abs(t * ls) for t, ls in zip(teachers[i], logs) if t > 0)
    div = n if mode == "bm" else n * c
    return total / div, mag / div


def ref_kd(z, y, t, *, tau, alpha, m, semantics):
    n = z.shape[0]
    teachers = [_softmax([x / tau for x in t[i]]) for i in range(n)]
    kl, mag = _ref_kl(teachers, z, tau, "bm" if semantics == "paper" else "mean")
    ce = _ref_ce(z, y)
    weight = alpha * m * tau * tau
    return (1 - alpha) * ce + weight * kl, ce, kl, weight * mag, mag


def ref_reg(z, y, *, tau, alpha, a, m, semantics):
    n, c = z.shape
    if semantics == "paper":
        teachers = []
        for i in range(n):
            pd = _ref_teacher_pd(int(y[i]), c, a)
            # softmax(log(p^d)/tau) = p^d ** (1/tau) renormalised (0 stays 0)
            w = [p ** (1.0 / tau) for p in pd]
            teachers.append([x / sum(w) for x in w])
        kl, mag = _ref_kl(teachers, z, tau, "bm")
        weight = alpha * m * tau * tau
    else:
        teachers = [_softmax([p / tau for p in _ref_teacher_pd(int(y[i]), c, a)]) for i in range(n)]
        kl, mag = _ref_kl(teachers, z, 1.0, "mean")
        weight = alpha * m
    ce = _ref_ce(z, y)
    return (1 - alpha) * ce + weight * kl, ce, kl, weight * mag, mag


def ref_lsr(z, y, *, eps, semantics):
    n, c = z.shape
    total = kl = mag = 0.0
    for i in range(n):
        if semantics == "paper":
            q = [(1 - eps) * (k == int(y[i])) + eps / c for k in range(c)]
        else:
            q = [(1 - eps) if k == int(y[i]) else eps / (c - 1) for k in range(c)]
        logp = _log_softmax(list(z[i]))
        total += -sum(qk * lk for qk, lk in zip(q, logp))
        kl += _kl_row(q, logp)
        mag += sum(abs(qk * math.log(qk)) + abs(qk * lk) for qk, lk in zip(q, logp) if qk > 0)
    return total / n, _ref_ce(z, y), kl / n, 0.0, mag / n


# ---------------------------------------------------------------------------------------------------
# Helpers

SHAPES = [(1, 2), (7, 2), (5, 10), (16, 10), (3, 100), (32, 100)]


def _data(n: int, c: int, seed: int, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return z, t, y


def _close(got: torch.Tensor, want: float, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    g = float(got.detach()) if isinstance(got, torch.Tensor) else float(got)
    assert math.isfinite(g)
    assert abs(g - want) <= atol + rtol * abs(want), f"got {g!r}, reference {want!r}"


# float32 KL: absolute error <= KL_EPS * magnitude (eps32 = 6e-8; a few roundings per term)
KL_EPS = 4e-7


def _check_parts(parts, ref) -> None:
    total, ce, kl, weighted_mag, mag = ref
    _close(parts.total, total, atol=1e-6 + KL_EPS * weighted_mag)
    _close(parts.ce, ce)
    _close(parts.kl, kl, atol=1e-7 + KL_EPS * mag)
    for x in (parts.total, parts.ce, parts.kl):
        assert x.dim() == 0


# ---------------------------------------------------------------------------------------------------
# Values against the reference


@pytest.mark.parametrize("n,c", SHAPES)
def test_ce_matches_reference(n, c):
    z, _, y = _data(n, c, seed=1)
    parts = ce_loss(z.float(), y)
    ref = _ref_ce(z.float().double().numpy(), y.numpy())
    _close(parts.total, ref)
    _close(parts.ce, ref)
    assert float(parts.kl) == 0.0


@pytest.mark.parametrize("semantics", ["paper", "official"])
@pytest.mark.parametrize("n,c", SHAPES)
@pytest.mark.parametrize("tau,alpha,m", [(1.0, 0.5, 1.0), (4.0, 0.9, 1.0), (20.0, 0.1, 50.0)])
def test_kd_matches_reference(semantics, n, c, tau, alpha, m):
    z, t, y = _data(n, c, seed=n * 1000 + c)
    z32, t32 = z.float(), t.float()
    parts = kd_loss(z32, y, t32, tau=tau, alpha=alpha, multiplier=m, semantics=semantics)
    ref = ref_kd(z32.double().numpy(), y.numpy(), t32.double().numpy(), tau=tau, alpha=alpha, m=m,
                 semantics=semantics)
    _check_parts(parts, ref)


@pytest.mark.parametrize("semantics", ["paper", "official"])
@pytest.mark.parametrize("n,c", SHAPES)
@pytest.mark.parametrize("tau,alpha,a,m", [(1.0, 0.5, 0.9, 1.0), (20.0, 0.95, 0.99, 1.0),
                                           (40.0, 0.1, 0.99, 100.0), (3.0, 0.3, 1.0, 2.0)])
def test_tfkd_reg_matches_reference(semantics, n, c, tau, alpha, a, m):
    if a <= 1.0 / c:
        pytest.skip("a must exceed 1/C")
    z, _, y = _data(n, c, seed=n * 1000 + c + 7)
    z32 = z.float()
    parts = tfkd_reg_loss(z32, y, tau=tau, alpha=alpha, a=a, multiplier=m, semantics=semantics)
    ref = ref_reg(z32.double().numpy(), y.numpy(), tau=tau, alpha=alpha, a=a, m=m, semantics=semantics)
    _check_parts(parts, ref)


@pytest.mark.parametrize("semantics", ["paper", "official"])
@pytest.mark.parametrize("n,c", SHAPES)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_lsr_matches_reference(semantics, n, c, eps):
    z, _, y = _data(n, c, seed=n * 1000 + c + 11)
    z32 = z.float()
    parts = lsr_loss(z32, y, eps=eps, semantics=semantics)
    _check_parts(parts, ref_lsr(z32.double().numpy(), y.numpy(), eps=eps, semantics=semantics))


def test_lsr_semantics_differ_as_documented():
    # official puts eps/(C-1) off the true class, paper eps/C: different losses unless eps == 0
    z, _, y = _data(8, 10, seed=3)
    p = lsr_loss(z.float(), y, eps=0.1, semantics="paper").total
    o = lsr_loss(z.float(), y, eps=0.1, semantics="official").total
    assert abs(float(p) - float(o)) > 1e-4
    # official eps equals paper eps' = eps*C/(C-1) (tfkd_method.md 2.2, quirk 7)
    p2 = lsr_loss(z.float(), y, eps=0.1 * 10 / 9, semantics="paper").total
    _close(o, float(p2))


# ---------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("n,c", [(4, 2), (8, 10), (16, 100)])
@pytest.mark.parametrize("tau,alpha,a,m", [(10.0, 0.95, 0.99, 1.0), (20.0, 0.1, 0.99, 100.0),
                                           (40.0, 0.1, 0.99, 50.0), (1.0, 0.5, 0.7, 3.0)])
def test_official_reg_gradient_identity(n, c, tau, alpha, a, m):
    """tfkd_method.md 2.3: dL/dz = (s/N)(p - [(1-eps')e_y + eps' u'])."""
    if a <= 1.0 / c:
        pytest.skip("a must exceed 1/C")
    z, _, y = _data(n, c, seed=5 * n + c)
    z.requires_grad_(True)
    loss = tfkd_reg_loss(z, y, tau=tau, alpha=alpha, a=a, multiplier=m, semantics="official").total
    loss.backward()
    s = (1 - alpha) + alpha * m / c
    eps = (alpha * m / c) / s
    want = np.zeros((n, c))
    zn = z.detach().numpy()
    for i in range(n):
        p = _softmax(list(zn[i]))
        u = _softmax([v / tau for v in _ref_teacher_pd(int(y[i]), c, a)])
        for k in range(c):
            target = (1 - eps) * (k == int(y[i])) + eps * u[k]
            want[i, k] = s / n * (p[k] - target)
    np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_kd_gradient_hinton_form(semantics):
    """dL/dz = (1/N)[(1-alpha)(p - e_y) + alpha*m*tau*w*(p_tau - q_tau)], w = 1 (paper) or 1/C."""
    n, c, tau, alpha, m = 6, 10, 4.0, 0.7, 2.0
    z, t, y = _data(n, c, seed=9)
    z.requires_grad_(True)
    kd_loss(z, y, t, tau=tau, alpha=alpha, multiplier=m, semantics=semantics).total.backward()
    w = 1.0 if semantics == "paper" else 1.0 / c
    zn, tn = z.detach().numpy(), t.numpy()
    want = np.zeros((n, c))
    for i in range(n):
        p = _softmax(list(zn[i]))
        pt = _softmax([v / tau for v in zn[i]])
        qt = _softmax([v / tau for v in tn[i]])
        for k in range(c):
            want[i, k] = ((1 - alpha) * (p[k] - (k == int(y[i]))) + alpha * m * tau * w * (pt[k] - qt[k])) / n
    np.testing.assert_allclose(z.grad.numpy(), want, rtol=1e-5, atol=1e-7)


def test_kd_does_not_backpropagate_into_teacher():
    z, t, y = _data(4, 10, seed=2)
    z.requires_grad_(True)
    t.requires_grad_(True)
    kd_loss(z, y, t, tau=4.0, alpha=0.5).total.backward()
    assert z.grad is not None
    assert t.grad is None


# ---------------------------------------------------------------------------------------------------
# Published numbers (tfkd_method.md 2.2 quirk 3 and 2.4)

# correct-class probability of u' = softmax(p^d/T), C=100: {T: (a=0.5, a=0.9, a=0.99)}
OFFICIAL_TABLE = {
    1: (0.01630, 0.02422, 0.02646), 2: (0.01277, 0.01559, 0.01630), 4: (0.01130, 0.01249, 0.01277),
    6: (0.01085, 0.01160, 0.01177), 10: (0.01050, 0.01093, 0.01103), 20: (0.01025, 0.01045, 0.01050),
    40: (0.01012, 0.01022, 0.01025),
}


def _half_ulp(published: float, sig: int) -> float:
    """Half a unit in the last published digit (`sig` significant digits)."""
    return 0.5 * 10 ** (math.floor(math.log10(abs(published))) - sig + 1)


@pytest.mark.parametrize("tau", sorted(OFFICIAL_TABLE))
@pytest.mark.parametrize("col,a", [(0, 0.5), (1, 0.9), (2, 0.99)])
def test_official_target_table(tau, col, a):
    pd = manual_teacher(torch.tensor([3]), 100, a, dtype=torch.float64)
    assert pd.shape == (1, 100)
    assert float(pd[0, 3]) == pytest.approx(a)
    assert float(pd.sum()) == pytest.approx(1.0)
    u = torch.softmax(pd / tau, dim=1)
    published = OFFICIAL_TABLE[tau][col]
    assert abs(float(u[0, 3]) - published) <= _half_ulp(published, 4)


@pytest.mark.parametrize("tau,published", [(10.0, 0.01103), (20.0, 0.01050), (40.0, 0.01025)])
def test_official_loss_uses_the_published_target(tau, published):
    """Recover u' from the official reg loss's gradient: alpha=1, m=1, z=0 -> grad = (p - u')/(N*C)."""
    n, c = 3, 100
    y = torch.tensor([0, 41, 99])
    z = torch.zeros(n, c, requires_grad=True)
    tfkd_reg_loss(z, y, tau=tau, alpha=1.0, a=0.99, semantics="official").total.backward()
    u = 1.0 / c - z.grad.double() * n * c
    for i in range(n):
        assert abs(float(u[i, y[i]]) - published) <= _half_ulp(published, 4)
        assert float(u[i].sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("tau,published", [(10.0, 0.0247), (20.0, 0.0157), (40.0, 0.0126)])
def test_paper_log_space_target(tau, published):
    """Recover the paper teacher from the loss: alpha=1, m=1, z=0 -> grad = (tau/N)(u - teacher)."""
    n, c = 2, 100
    y = torch.tensor([5, 77])
    z = torch.zeros(n, c, requires_grad=True)
    tfkd_reg_loss(z, y, tau=tau, alpha=1.0, a=0.99, semantics="paper").total.backward()
    teacher = 1.0 / c - z.grad.double() * n / tau
    for i in range(n):
        assert abs(float(teacher[i, y[i]]) - published) <= _half_ulp(published, 3)
    # and directly: softmax(log(p^d)/tau)
    pd = manual_teacher(torch.tensor([0]), c, 0.99, dtype=torch.float64)
    direct = torch.softmax(torch.log(pd) / tau, dim=1)[0, 0]
    assert abs(float(direct) - published) <= _half_ulp(published, 3)


# ---------------------------------------------------------------------------------------------------
# Identities and edge cases


@pytest.mark.parametrize("n,c", [(8, 2), (8, 10), (8, 100)])
@pytest.mark.parametrize("m", [1.0, 50.0])
def test_official_kd_is_paper_kd_with_multiplier_over_c(n, c, m):
    z, t, y = _data(n, c, seed=13 + c)
    z1 = z.float().requires_grad_(True)
    z2 = z.float().requires_grad_(True)
    o = kd_loss(z1, y, t.float(), tau=6.0, alpha=0.9, multiplier=m, semantics="official")
    p = kd_loss(z2, y, t.float(), tau=6.0, alpha=0.9, multiplier=m / c, semantics="paper")
    _close(o.total, float(p.total.detach()))
    o.total.backward()
    p.total.backward()
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("tau", [1.0, 20.0])
def test_one_hot_teacher_paper_is_finite(tau):
    z, _, y = _data(16, 10, seed=4)
    z = z.float().requires_grad_(True)
    parts = tfkd_reg_loss(z, y, tau=tau, alpha=0.9, a=1.0, semantics="paper")
    assert all(math.isfinite(float(x.detach())) for x in (parts.total, parts.ce, parts.kl))
    parts.total.backward()
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0
    ref = ref_reg(z.detach().double().numpy(), y.numpy(), tau=tau, alpha=0.9, a=1.0, m=1.0,
                  semantics="paper")
    _check_parts(parts, ref)


@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_alpha_zero_is_cross_entropy(semantics):
    z, t, y = _data(12, 10, seed=6)
    z = z.float()
    ce = _ref_ce(z.double().numpy(), y.numpy())
    _close(kd_loss(z, y, t.float(), tau=4.0, alpha=0.0, multiplier=7.0, semantics=semantics).total, ce)
    _close(tfkd_reg_loss(z, y, tau=20.0, alpha=0.0, a=0.99, multiplier=7.0, semantics=semantics).total, ce)
    _close(tfkd_reg_loss(z, y, tau=20.0, alpha=0.0, a=1.0, semantics=semantics).total, ce)
    _close(lsr_loss(z, y, eps=0.0, semantics=semantics).total, ce)
    _close(ce_loss(z, y).total, ce)


# ---------------------------------------------------------------------------------------------------
# Bad arguments


def _z(n=4, c=10):
    z, t, y = _data(n, c, seed=0)
    return z.float(), t.float(), y


@pytest.mark.parametrize("kwargs,name,value", [
    (dict(a=0.1), "a", "0.1"),  # a == 1/C for C=10
    (dict(a=0.05), "a", "0.05"),
    (dict(a=1.01), "a", "1.01"),
    (dict(a=float("nan")), "a", "nan"),
    (dict(tau=0.0), "tau", "0.0"),
    (dict(tau=-2.0), "tau", "-2.0"),
    (dict(tau=float("nan")), "tau", "nan"),
    (dict(tau=float("inf")), "tau", "inf"),
    (dict(alpha=-0.1), "alpha", "-0.1"),
    (dict(alpha=1.5), "alpha", "1.5"),
    (dict(alpha=float("nan")), "alpha", "nan"),
    (dict(multiplier=0.0), "multiplier", "0.0"),
    (dict(semantics="offical"), "semantics", "'offical'"),
])
def test_reg_bad_arguments(kwargs, name, value):
    z, _, y = _z()
    args = dict(tau=4.0, alpha=0.5, a=0.9, semantics="paper") | kwargs
    with pytest.raises(ConfigError) as exc:
        tfkd_reg_loss(z, y, **args)
    msg = str(exc.value)
    assert re.search(rf"\b{re.escape(name)}={re.escape(value)}", msg), msg


@pytest.mark.parametrize("kwargs,name,value", [
    (dict(tau=0.0), "tau", "0.0"),
    (dict(tau=float("nan")), "tau", "nan"),
    (dict(alpha=-0.5), "alpha", "-0.5"),
    (dict(alpha=1.1), "alpha", "1.1"),
    (dict(semantics="papers"), "semantics", "'papers'"),
])
def test_kd_bad_arguments(kwargs, name, value):
    z, t, y = _z()
    args = dict(tau=4.0, alpha=0.5, semantics="paper") | kwargs
    with pytest.raises(ConfigError) as exc:
        kd_loss(z, y, t, **args)
    assert re.search(rf"\b{re.escape(name)}={re.escape(value)}", str(exc.value)), str(exc.value)


@pytest.mark.parametrize("eps", [1.0, 1.5, -0.1, float("nan")])
def test_lsr_bad_eps(eps):
    z, _, y = _z()
    with pytest.raises(ConfigError, match=rf"eps={re.escape(repr(eps))}"):
        lsr_loss(z, y, eps=eps)


def test_lsr_unknown_semantics():
    z, _, y = _z()
    with pytest.raises(ConfigError, match="semantics='hinton'"):
        lsr_loss(z, y, eps=0.1, semantics="hinton")


@pytest.mark.parametrize("tshape", [(4, 9), (3, 10), (4, 10, 1)])
def test_kd_teacher_wrong_shape(tshape):
    z, _, y = _z()
    with pytest.raises(ConfigError) as exc:
        kd_loss(z, y, torch.zeros(tshape), tau=4.0, alpha=0.5)
    msg = str(exc.value)
    assert str(tshape) in msg and "(4, 10)" in msg, msg


def test_config_error_is_a_value_error():
    z, _, y = _z()
    with pytest.raises(ValueError):
        tfkd_reg_loss(z, y, tau=-1.0, alpha=0.5, a=0.9)


# ---------------------------------------------------------------------------------------------------
# Large batches and low precision


def test_large_batch_runs_vectorised():
    z, t, y = _data(4096, 100, seed=21)
    z, t = z.float().requires_grad_(True), t.float()
    outs = [
        ce_loss(z, y), lsr_loss(z, y, eps=0.1), lsr_loss(z, y, eps=0.1, semantics="official"),
        kd_loss(z, y, t, tau=4.0, alpha=0.9), kd_loss(z, y, t, tau=4.0, alpha=0.9, semantics="official"),
        tfkd_reg_loss(z, y, tau=20.0, alpha=0.1, a=0.99),
        tfkd_reg_loss(z, y, tau=20.0, alpha=0.1, a=0.99, multiplier=100.0, semantics="official"),
    ]
    total = sum(o.total for o in outs)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(z.grad).all()
    # spot-check one value of the big batch against the reference on a slice of rows
    idx = torch.arange(0, 4096, 256)
    ref = ref_reg(z.detach()[idx].double().numpy(), y[idx].numpy(), tau=20.0, alpha=0.1, a=0.99, m=1.0,
                  semantics="paper")
    _close(tfkd_reg_loss(z.detach()[idx], y[idx], tau=20.0, alpha=0.1, a=0.99).total, ref[0],
           atol=1e-6 + KL_EPS * ref[3])


@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_bf16_inputs_give_float32_outputs(semantics):
    z, t, y = _data(64, 100, seed=8)
    z32, t32 = z.float(), t.float()
    zb, tb = z32.bfloat16(), t32.bfloat16()
    cases = [
        (lambda a, b: ce_loss(a, y)),
        (lambda a, b: lsr_loss(a, y, eps=0.1, semantics=semantics)),
        (lambda a, b: kd_loss(a, y, b, tau=4.0, alpha=0.9, semantics=semantics)),
        (lambda a, b: tfkd_reg_loss(a, y, tau=20.0, alpha=0.5, a=0.99, semantics=semantics)),
    ]
    for fn in cases:
        out_b = fn(zb, tb)
        for x in (out_b.total, out_b.ce, out_b.kl):
            assert x.dtype == torch.float32
            assert torch.isfinite(x)
        # exactly the float32 computation on the bf16-rounded values
        exact = fn(zb.float(), tb.float())
        torch.testing.assert_close(out_b.total, exact.total, rtol=1e-6, atol=1e-7)
        # and close to the float32 result on the unrounded logits (bf16 keeps ~3 digits)
        ref = fn(z32, t32)
        assert abs(float(out_b.total) - float(ref.total)) <= 2e-2 * abs(float(ref.total)) + 1e-3


def test_bf16_gradient_reaches_bf16_logits():
    z, _, y = _data(8, 10, seed=1)
    zb = z.bfloat16().requires_grad_(True)
    tfkd_reg_loss(zb, y, tau=4.0, alpha=0.5, a=0.9).total.backward()
    assert zb.grad is not None and zb.grad.dtype == torch.bfloat16
    assert torch.isfinite(zb.grad.float()).all()


# ---------------------------------------------------------------------------------------------------
# The method table drives the trainer's loss (issue 12.4)


def test_every_method_names_a_loss_that_takes_its_fields():
    import inspect

    from tfkd_search.losses import LOSSES
    from tfkd_search.registry import METHOD_REGISTRY

    for name, m in METHOD_REGISTRY.items():
        params = inspect.signature(LOSSES.get(m.loss)).parameters
        keywords = {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY}
        assert set(m.loss_fields) == keywords, name  # every field used, none missing
        positional = [p for p, v in params.items() if v.kind is not inspect.Parameter.KEYWORD_ONLY]
        assert len(positional) == (3 if m.needs_teacher else 2), name


@pytest.mark.parametrize("method", ["ce", "lsr", "kd", "tfkd_self", "tfkd_reg"])
@pytest.mark.parametrize("semantics", ["paper", "official"])
def test_loss_fn_for_matches_the_public_losses(make_cfg, method, semantics):
    from tfkd_search.losses import loss_fn_for

    over = {"loss.tau": 3.0, "loss.alpha": 0.4, "loss.a": 0.8, "loss.multiplier": 2.0,
            "loss.eps": 0.2, "loss.semantics": semantics}
    teacher = {"teacher": {"checkpoint": "t.pt"}} if method in ("kd", "tfkd_self") else {}
    cfg = make_cfg(over, method=method, **teacher)
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    expected = {
        "ce": lambda: ce_loss(z, y),
        "lsr": lambda: lsr_loss(z, y, eps=0.2, semantics=semantics),
        "kd": lambda: kd_loss(z, y, t, tau=3.0, alpha=0.4, multiplier=2.0, semantics=semantics),
        "tfkd_reg": lambda: tfkd_reg_loss(z, y, tau=3.0, alpha=0.4, a=0.8, multiplier=2.0,
                                          semantics=semantics),
    }[{"tfkd_self": "kd"}.get(method, method)]()
    got = loss_fn_for(cfg)(z, y, t)
    for part in ("total", "ce", "kl"):
        torch.testing.assert_close(getattr(got, part), getattr(expected, part), rtol=0, atol=0)
    if method not in ("kd", "tfkd_self"):  # teacher logits are optional for the others
        torch.testing.assert_close(loss_fn_for(cfg)(z, y).total, expected.total, rtol=0, atol=0)
    else:
        with pytest.raises(TypeError):
            loss_fn_for(cfg)(z, y)


def test_losses_registry_misses_are_config_errors():
    from tfkd_search.losses import LOSSES

    with pytest.raises(ConfigError, match="Did you mean 'tfkd_reg'"):
        LOSSES.get("tfkd_rge")
