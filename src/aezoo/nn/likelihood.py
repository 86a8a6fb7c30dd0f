"""Likelihoods p(x | decoder output) of the families that reconstruct items (ae, dae, vae, vqvae, hash,
nvae): one object per kind with its negative log-likelihood, its mean and the decoder outputs it needs per
data value, and the one rule that resolves a config's ``likelihood="auto"``.

A decoder emits ``params`` values per data value, stacked along dimension 1: (B, params * C, H, W) for
an item (C, H, W), (B, params * D) for a vector (D,) (:meth:`Likelihood.out_shape`). ``nll`` is per item,
(B,), summed over the item's values, in fp32 also under bf16 autocast (:mod:`aezoo.losses`); ``mean`` is
E[x] in fp32, what a reconstruction shows.

"auto" picks the first kind the family offers (its config's ``likelihood`` choices) in this order:
word counts (text): multinomial, then gaussian; one-channel images: bernoulli (binarised or near-binary
pixels, Salakhutdinov & Murray 2008's MNIST), then the logistic mixture; images of several channels: the
discretised logistic mixture (256 levels per value, Salimans et al. 2017, as NVAE for colour), then
bernoulli (cross-entropy of values in [0, 1]); anything else: gaussian.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, get_args, get_type_hints

import torch
import torch.nn.functional as F

from ..errors import UserError
from ..losses import (bernoulli_nll, discretized_logistic_nll, discretized_mixture_logistic_nll, gaussian_nll,
                      squared_error)


class Likelihood:
    """p(x | out) for decoder outputs ``out`` (B, params * C, ...) and items ``x`` (B, C, ...)."""

    name: ClassVar[str] = "?"
    params: ClassVar[int] = 1  # decoder outputs per data value
    weighted: ClassVar[bool] = False  # nll takes a per-value weight (e.g. 1 on an inpainting mask's holes)

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """What the decoder emits for one item of ``shape``: (params * C, *rest)."""
        return (self.params * shape[0], *shape[1:])

    def nll(self, out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x | out) per item, (B,), in nats. ``weight`` (broadcastable to x) counts each value."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        """E[x | out], shaped like x, in fp32."""
        raise NotImplementedError

    def _unweighted(self, weight) -> None:
        if weight is not None:
            raise ValueError(f"the {self.name} likelihood takes no per-value weight")


class Bernoulli(Likelihood):
    """Independent Bernoulli values with logits ``out``; for greyscale x in [0, 1] the cross-entropy."""

    name = "bernoulli"
    weighted = True

    def nll(self, out, x, weight=None):
        return bernoulli_nll(out, x, weight)

    def mean(self, out):
        return torch.sigmoid(out.float())


@dataclasses.dataclass(frozen=True, eq=False)
class Gaussian(Likelihood):
    """N(x | out, exp(log_var)) per value. ``log_var`` None: the sum of squared errors, which is
    -log N(x | out, 1/2) less its constant (D/2) log pi: what a deterministic autoencoder minimises;
    otherwise a number or a tensor broadcastable to x (a VAE's fixed or learned variance), exactly."""

    log_var: torch.Tensor | float | None = None
    name: ClassVar[str] = "gaussian"
    weighted: ClassVar[bool] = True

    def nll(self, out, x, weight=None):
        if self.log_var is None:
            return squared_error(out, x, weight)
        self._unweighted(weight)
        return gaussian_nll(out, x, self.log_var)

    def mean(self, out):
        return out.float()


class DiscretizedLogistic(Likelihood):
    """A logistic per value integrated over its bin of 256 levels in [0, 1] (Salimans et al. 2017);
    the decoder emits means, then log-scales."""

    name = "logistic"
    params = 2

    def nll(self, out, x, weight=None):
        self._unweighted(weight)
        mean, log_scale = out.chunk(2, dim=1)
        return discretized_logistic_nll(mean, log_scale, x)

    def mean(self, out):
        return out.chunk(2, dim=1)[0].float().clamp(0, 1)


@dataclasses.dataclass(frozen=True, eq=False)
class LogisticMixture(Likelihood):
    """A mixture of ``mixtures`` discretised logistics per value (PixelCNN++, without its channel
    coupling; NVAE's likelihood). The decoder emits, per value, K mixture logits, K means (through a
    sigmoid, so in (0, 1)) and K log-scales: (B, 3 * K * C, ...)."""

    mixtures: int = 10
    name: ClassVar[str] = "logistic_mixture"

    @property
    def params(self) -> int:  # type: ignore[override]
        return 3 * self.mixtures

    def split(self, out: torch.Tensor):
        """(logits, means in (0, 1), log-scales), each (B, K, C, ...)."""
        b, k = out.shape[0], self.mixtures
        logits, means, log_scales = out.view(b, 3, k, out.shape[1] // (3 * k), *out.shape[2:]).unbind(1)
        return logits, torch.sigmoid(means), log_scales

    def nll(self, out, x, weight=None):
        self._unweighted(weight)
        return discretized_mixture_logistic_nll(*self.split(out), x)

    def mean(self, out):
        logits, means, _ = self.split(out.float())
        return (torch.softmax(logits, 1) * means).sum(1).clamp(0, 1)


class Multinomial(Likelihood):
    """Word counts x (B, V) drawn from softmax(out): -sum_w x_w log p_w (the multinomial coefficient, a
    constant of the data, left out). Its mean is the words' proportions (a one-word document)."""

    name = "multinomial"

    def nll(self, out, x, weight=None):
        self._unweighted(weight)
        return -(x.float() * F.log_softmax(out.float().flatten(1), dim=-1).view_as(out)).flatten(1).sum(1)

    def mean(self, out):
        return torch.softmax(out.float().flatten(1), dim=-1).view_as(out)


KINDS = {cls.name: cls for cls in (Bernoulli, Gaussian, DiscretizedLogistic, LogisticMixture, Multinomial)}
UNIT_RANGE = {"bernoulli", "logistic", "logistic_mixture"}  # kinds for values in [0, 1] (image data)


def auto_order(data_kind: str, input_shape: tuple[int, ...]) -> tuple[str, ...]:
    """The kinds "auto" tries, best first, for data of this kind and item shape (the module docstring)."""
    if data_kind == "text":
        return ("multinomial", "gaussian")
    if data_kind == "image":
        if input_shape[0] == 1:
            return ("bernoulli", "logistic_mixture", "gaussian")
        return ("logistic_mixture", "bernoulli", "gaussian")
    return ("gaussian",)


def resolve_likelihood(config, data_kind: str | None = None) -> str:
    """The kind ``config.likelihood`` names, "auto" resolved for the config's data (``data_kind``: what
    the decoder reconstructs, when not the data itself); the choices are those its ``likelihood`` field
    offers. A kind that does not fit the data is a :class:`UserError`."""
    choice, shape = config.likelihood, tuple(config.input_shape)
    data_kind = data_kind or config.data_kind
    offered = [k for k in get_args(get_type_hints(type(config))["likelihood"]) if k != "auto"]
    if choice == "auto":
        return next(k for k in (*auto_order(data_kind, shape), *offered) if k in offered)
    if choice in UNIT_RANGE and data_kind != "image":
        raise UserError(f"likelihood={choice} needs values in [0, 1] (image data); use gaussian")
    if choice == "multinomial" and (data_kind == "image" or len(shape) != 1):
        raise UserError("likelihood=multinomial needs word counts (text data)")
    return choice


class LikelihoodConfig:
    """Mixin of a model config with a ``likelihood`` field (a Literal of the kinds the family offers, and
    "auto" where it picks one): ``resolved_likelihood`` by :func:`resolve_likelihood`, for the kind of data
    the decoder reconstructs (``target_kind``: the data's own unless the family says otherwise)."""

    @property
    def target_kind(self) -> str:
        return self.data_kind

    @property
    def resolved_likelihood(self) -> str:
        return resolve_likelihood(self, self.target_kind)


def make_likelihood(kind: str, *, log_var: torch.Tensor | float | None = None, mixtures: int = 10) -> Likelihood:
    """The likelihood object of a resolved kind; ``log_var`` (gaussian) and ``mixtures``
    (logistic_mixture) parameterise those kinds."""
    if kind == "gaussian":
        return Gaussian(log_var)
    if kind == "logistic_mixture":
        return LogisticMixture(mixtures)
    return KINDS[kind]()


__all__ = ["Likelihood", "Bernoulli", "Gaussian", "DiscretizedLogistic", "LogisticMixture", "Multinomial",
           "LikelihoodConfig", "resolve_likelihood", "make_likelihood", "auto_order"]
