"""Model registry: a name maps to a model class (which carries its Config). No chains of if/elif on names."""

from __future__ import annotations

import difflib

from .errors import UserError

_MODELS: dict[str, type] = {}


def register(name: str):
    """Class decorator: ``@register("ae")`` makes the model available to ``create``, ``load`` and the CLI."""

    def wrap(cls):
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _MODELS[name] = cls
        return cls

    return wrap


def get(name: str) -> type:
    _import_models()
    if not isinstance(name, str):
        raise UserError(f"model name must be a string, got {name!r}")
    try:
        return _MODELS[name]
    except KeyError:
        hint = difflib.get_close_matches(name, _MODELS, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"unknown model {name!r}{extra}; known models: {', '.join(sorted(_MODELS))}") from None


def names() -> list[str]:
    _import_models()
    return sorted(_MODELS)


def _import_models() -> None:
    # Importing the package registers every model family (each module decorates its class).
    from . import models  # noqa: F401
