"""One generic name -> object registry with helpful misses (closest match and the full list), the
table of training methods (`METHOD_REGISTRY`) and the model zoo's names (`MODEL_NAMES`)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")

# The zoo's model names, known without importing torch (validating a config or a space then costs no
# torch import: `tfkd-search validate` answers in a fraction of a second). `tfkd_search.models` refuses
# to register a model that is missing here.
MODEL_NAMES: tuple[str, ...] = (
    "densenet121", "googlenet", "mobilenetv2", "resnet18", "resnet50", "resnext29_8x64d",
    "shufflenetv2", "tiny_cnn", "tiny_mlp", "tiny_resnet",
)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or "" when nothing is close."""
    near = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" Did you mean {near[0]!r}?" if near else ""


class Registry(Generic[T]):
    """Maps names to objects; registration is explicit (a decorator), duplicates are an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        if name in self._items:
            return self._items[name]
        raise ConfigError(
            f"unknown {self.kind} {name!r}.{did_you_mean(name, self._items)} "
            f"Available: {', '.join(self.names())}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        return sorted(self._items)

    def __iter__(self) -> Iterator[str]:
        """Names in registration order (names() is sorted)."""
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())


# ---------------------------------------------------------------------------------------------
# Training methods: one table that config validation, the trainer (losses.loss_fn_for) and the docs
# read. Kept here, free of torch, so configs validate without importing it.


@dataclass(frozen=True)
class Method:
    """What a training method needs.

    `loss` names the entry of `tfkd_search.losses.LOSSES` that computes it; `loss_fields` are the
    `loss.*` config fields passed to that function as keywords (the others do not affect the run);
    `needs_teacher`: a teacher checkpoint is required and the loss takes the teacher's logits;
    `same_architecture`: the teacher must be the student's own architecture; `manual_teacher`: the
    loss builds the manual teacher p^d from `loss.a`, which must then lie in (1/C, 1].
    """

    name: str
    summary: str
    loss: str
    loss_fields: tuple[str, ...] = ()
    needs_teacher: bool = False
    same_architecture: bool = False
    manual_teacher: bool = False


METHOD_REGISTRY: Registry[Method] = Registry("method")

for _m in (
    Method("ce", "plain cross-entropy baseline", loss="ce"),
    Method("lsr", "label smoothing regularisation", loss="lsr", loss_fields=("eps", "semantics")),
    Method("kd", "knowledge distillation from any zoo model (normal KD, Re-KD, De-KD)", loss="kd",
           loss_fields=("tau", "alpha", "multiplier", "semantics"), needs_teacher=True),
    Method("tfkd_self", "Tf-KD self: distillation from the student's own pretrained self",
           loss="kd", loss_fields=("tau", "alpha", "multiplier", "semantics"), needs_teacher=True,
           same_architecture=True),
    Method("tfkd_reg", "Tf-KD reg: KL to a manually designed teacher (a on the true class)",
           loss="tfkd_reg", loss_fields=("tau", "alpha", "a", "multiplier", "semantics"),
           manual_teacher=True),
):
    METHOD_REGISTRY.register(_m.name)(_m)
del _m


def method_info(name: str) -> Method:
    """The table entry of a method; unknown names raise ConfigError with a hint and the list."""
    return METHOD_REGISTRY.get(name)
