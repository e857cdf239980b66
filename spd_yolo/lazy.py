# SPD-YOLO, AGPL-3.0 license
"""Public names of a package loaded from their modules on first use (PEP 562), so importing the package stays light."""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ("lazy_names",)


def lazy_names(package: str, names: dict[str, str], eager: tuple[str, ...] = ()) -> tuple[Callable, Callable]:
    """The module ``__getattr__`` and ``__dir__`` of `package` that load each public name from its module on first use.

    Args:
        package: the package's ``__name__``.
        names: public name -> the module that defines it, e.g. ``{"YOLO": "spd_yolo.model"}``.
        eager: names the package defines itself, listed by ``dir()`` beside the lazy ones.

    A name loaded once is stored in the package, so later lookups are plain attribute reads. Any other name raises
    AttributeError, so ``from package import submodule`` still imports the submodule.
    """

    def __getattr__(name: str):
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*eager, *names, *vars(importlib.import_module(package))})

    return __getattr__, __dir__
