"""Training objectives of Tf-KD (Yuan et al., CVPR 2020): pure, vectorised, device-agnostic.

Every loss returns `LossParts(total, ce, kl)`. Two semantics are offered (see README, "Loss semantics"):

* ``"paper"`` -- the equations of the paper with a true (batch-mean) KL:
  kd  = (1-alpha)*CE + alpha*m*tau^2 * KL_bm(softmax(t/tau) || softmax(z/tau))
  reg = (1-alpha)*CE + alpha*m*tau^2 * KL_bm(softmax(log(p^d)/tau) || softmax(z/tau))
  lsr = CE against (1-eps)*onehot + eps/C
  The manual teacher p^d is softened in log space (p^d ** (1/tau), renormalised), so tau and `a` really
  shape the target (docs/loss_semantics.md).
* ``"official"`` -- exactly what the released code computes (docs/loss_semantics.md):
  KL uses nn.KLDivLoss's default elementwise mean (summed KL / (N*C)); kd keeps tau^2; reg softens the
  *probability* vector (softmax(p^d/tau), nearly uniform) and not the student, without tau^2;
  lsr puts 1-eps on the true class and eps/(C-1) elsewhere.

Validation happens once, at the boundary: the public functions (`ce_loss`, `lsr_loss`,
`tfkd_reg_loss`, `kd_loss`) check their arguments and are the API for direct use. The trainer gets its
loss from `loss_fn_for(cfg)`, which reads the method table (`registry.METHOD_REGISTRY`: which entry of
`LOSSES` and which `loss.*` fields) and calls the unchecked kernels with the values of an already
validated RunConfig, so nothing is re-checked on every training step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError
from .registry import METHOD_REGISTRY, Registry

if TYPE_CHECKING:
    from .config import RunConfig

Semantics = Literal["paper", "official"]
SEMANTICS = ("paper", "official")


@dataclass(frozen=True)
class LossParts:
    """A loss and its parts, all 0-dim tensors: ``total = w_ce*ce + w_kl*kl`` (weights per loss)."""

    total: Tensor
    ce: Tensor
    kl: Tensor


def _check(semantics: str, *, tau: float | None = None, alpha: float | None = None,
           multiplier: float | None = None) -> None:
    if semantics not in SEMANTICS:
        raise ConfigError(f"loss semantics must be one of {SEMANTICS}, got semantics={semantics!r}")
    if tau is not None and not (math.isfinite(tau) and tau > 0):
        raise ConfigError(f"tau (temperature) must be > 0, got tau={tau!r}; typical values are 1-40")
    if alpha is not None and not (0.0 <= alpha <= 1.0):
        raise ConfigError(f"alpha (weight of the KL term) must be in [0, 1], got alpha={alpha!r}")
    if multiplier is not None and not (math.isfinite(multiplier) and multiplier > 0):
        raise ConfigError(f"multiplier must be > 0, got multiplier={multiplier!r}")


def _kl(teacher_prob: Tensor, student_logp: Tensor, semantics: str) -> Tensor:
    """KL(teacher || student), summed over classes; divided by N ("paper") or N*C ("official")."""
    per_elem = torch.xlogy(teacher_prob, teacher_prob) - teacher_prob * student_logp
    total = per_elem.sum()
    n, c = student_logp.shape
    return total / (n * c) if semantics == "official" else total / n


# Unchecked kernels, one per LOSSES entry: the arguments come from a validated RunConfig.
LossFn = Callable[..., "LossParts"]
LOSSES: Registry[LossFn] = Registry("loss")


@LOSSES.register("ce")
def _ce(logits: Tensor, target: Tensor) -> LossParts:
    ce = F.cross_entropy(logits.float(), target)
    return LossParts(total=ce, ce=ce, kl=torch.zeros_like(ce))


@LOSSES.register("lsr")
def _lsr(logits: Tensor, target: Tensor, *, eps: float, semantics: Semantics = "paper") -> LossParts:
    z = logits.float()
    n, c = z.shape
    logp = F.log_softmax(z, dim=1)
    if semantics == "paper":
        off, on = eps / c, 1.0 - eps + eps / c
    else:
        off, on = eps / (c - 1), 1.0 - eps
    q = torch.full_like(logp, off).scatter_(1, target.unsqueeze(1), on)
    total = -(q * logp).sum() / n
    ce = F.cross_entropy(z, target)
    return LossParts(total=total, ce=ce, kl=_kl(q, logp, "paper"))


@LOSSES.register("tfkd_reg")
def _tfkd_reg(logits: Tensor, target: Tensor, *, tau: float, alpha: float, a: float,
              multiplier: float = 1.0, semantics: Semantics = "paper") -> LossParts:
    z = logits.float()
    n, c = z.shape
    ce = F.cross_entropy(z, target)
    p_d = manual_teacher(target, c, a)
    if semantics == "paper":
        # log-space softening: softmax(log(p^d)/tau) = p^d**(1/tau) renormalised; a=1 gives -inf
        # logits off the true class, i.e. a one-hot teacher, which softmax handles exactly.
        teacher = F.softmax(torch.log(p_d) / tau, dim=1)
        kl = _kl(teacher, F.log_softmax(z / tau, dim=1), "paper")
        weight = alpha * multiplier * tau * tau
    else:
        teacher = F.softmax(p_d / tau, dim=1)  # softmax over probabilities: nearly uniform
        kl = _kl(teacher, F.log_softmax(z, dim=1), "official")  # student not softened, no tau^2
        weight = alpha * multiplier
    return LossParts(total=(1.0 - alpha) * ce + weight * kl, ce=ce, kl=kl)


@LOSSES.register("kd")
def _kd(logits: Tensor, target: Tensor, teacher_logits: Tensor, *, tau: float, alpha: float,
        multiplier: float = 1.0, semantics: Semantics = "paper") -> LossParts:
    z = logits.float()
    ce = F.cross_entropy(z, target)
    teacher = F.softmax(teacher_logits.float().detach() / tau, dim=1)
    kl = _kl(teacher, F.log_softmax(z / tau, dim=1), semantics)
    return LossParts(total=(1.0 - alpha) * ce + alpha * multiplier * tau * tau * kl, ce=ce, kl=kl)


def loss_fn_for(cfg: RunConfig) -> Callable[..., LossParts]:
    """The training loss of a validated run config: `fn(logits, target, teacher_logits=None)`.

    Driven by the method table: the method names its LOSSES entry and the `loss.*` fields passed to
    it; methods with a teacher pass its logits as the third argument (required for them).
    """
    method = METHOD_REGISTRY.get(cfg.method)
    kernel = LOSSES.get(method.loss)
    kwargs: dict[str, Any] = {f: getattr(cfg.loss, f) for f in method.loss_fields}
    if method.needs_teacher:
        def with_teacher(z: Tensor, y: Tensor, t: Tensor) -> LossParts:
            return kernel(z, y, t, **kwargs)
        return with_teacher

    def without_teacher(z: Tensor, y: Tensor, t: Tensor | None = None) -> LossParts:
        return kernel(z, y, **kwargs)
    return without_teacher


# ---------------------------------------------------------------------------------------------------
# The checked public API


def ce_loss(logits: Tensor, target: Tensor) -> LossParts:
    """Plain cross-entropy (the `ce` baseline)."""
    return _ce(logits, target)


def lsr_loss(logits: Tensor, target: Tensor, *, eps: float,
             semantics: Semantics = "paper") -> LossParts:
    """Label smoothing: cross-entropy against a smoothed one-hot target.

    "paper": target (1-eps)*onehot + eps/C (Szegedy et al.). "official": 1-eps on the true class and
    eps/(C-1) on every other class (the released code, eps=0.1 hard-coded there).
    `.kl` is KL(target || p), i.e. the loss minus the target's entropy.
    """
    _check(semantics)
    if not (0.0 <= eps < 1.0):
        raise ConfigError(f"eps (label-smoothing weight) must be in [0, 1), got eps={eps!r}")
    return _lsr(logits, target, eps=eps, semantics=semantics)


def manual_teacher(target: Tensor, num_classes: int, a: float, *, dtype: torch.dtype = torch.float32
                   ) -> Tensor:
    """p^d: probability `a` on the true class and (1-a)/(C-1) on each other class, shape (N, C)."""
    p = torch.full((target.shape[0], num_classes), (1.0 - a) / (num_classes - 1), dtype=dtype,
                   device=target.device)
    return p.scatter_(1, target.unsqueeze(1), a)


def tfkd_reg_loss(logits: Tensor, target: Tensor, *, tau: float, alpha: float, a: float,
                  multiplier: float = 1.0, semantics: Semantics = "paper") -> LossParts:
    """Tf-KD_reg: cross-entropy plus KL to the manually designed teacher p^d (module docstring)."""
    _check(semantics, tau=tau, alpha=alpha, multiplier=multiplier)
    c = logits.shape[1]
    if not (1.0 / c < a <= 1.0):
        raise ConfigError(
            f"a (teacher probability on the true class) must be in (1/C, 1] = ({1.0 / c:.4g}, 1] "
            f"for C={c} classes, got a={a!r}; the paper uses 0.99")
    return _tfkd_reg(logits, target, tau=tau, alpha=alpha, a=a, multiplier=multiplier,
                     semantics=semantics)


def kd_loss(logits: Tensor, target: Tensor, teacher_logits: Tensor, *, tau: float, alpha: float,
            multiplier: float = 1.0, semantics: Semantics = "paper") -> LossParts:
    """Knowledge distillation from teacher logits (KD, Re-KD, De-KD and Tf-KD_self).

    Hinton's tau^2 keeps the soft-target gradient scale independent of tau (both semantics).
    """
    _check(semantics, tau=tau, alpha=alpha, multiplier=multiplier)
    if teacher_logits.shape != logits.shape:
        raise ConfigError(f"teacher logits have shape {tuple(teacher_logits.shape)} but the student's "
                          f"are {tuple(logits.shape)}: teacher and student must have the same classes")
    return _kd(logits, target, teacher_logits, tau=tau, alpha=alpha, multiplier=multiplier,
               semantics=semantics)
