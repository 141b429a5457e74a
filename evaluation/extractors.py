"""The registry of entity extractors (the one registry of this plugin kind).

It imports nothing of radsteer's own: an extractor is registered as a "module:attribute" path
and imported only when it is built, so listing the names (for the CLI's choices and the
protocol schema) never loads RadGraph or torch, and no backend module needs to import this one
to exist. It is filled explicitly with the built-in backends below and, for third parties,
through the `radsteer.extractors` entry-point group:

    [project.entry-points."radsteer.extractors"]
    my-extractor = "my_package.module:MyExtractor"

The target is a callable taking keyword options and returning an object with `name` and
`extract(texts) -> list[list[evaluation.entities.Entity]]`. A name registered twice (two
plugins, or a plugin reusing a built-in name with another target) is an error, never a silent
replacement.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

GROUP = "radsteer.extractors"
BUILTIN: dict[str, str] = {
    "lexicon": "evaluation.lexicon:LexiconExtractor",
    "radgraph": "evaluation.radgraph_backend:radgraph",
    "radgraph-xl": "evaluation.radgraph_backend:radgraph_xl",
}


class ExtractorError(Exception):
    """Any registry error (callers turn it into their own user-facing error)."""


class DuplicateExtractorError(ExtractorError, ValueError):
    """Two registrations under one name."""


class UnknownExtractorError(ExtractorError, ValueError):
    """A name no extractor is registered under."""


class ExtractorLoadError(ExtractorError, ImportError):
    """A registered "module:attribute" that cannot be imported (a broken or missing plugin)."""


_registry: dict[str, str | Callable[..., Any]] = {}
_origin: dict[str, str] = {}
_entry_points_loaded = False


def register(name: str, target: str | Callable[..., Any], origin: str = "explicit") -> None:
    """Register an extractor factory (a callable, or a "module:attribute" path imported lazily).

    Re-registering the very same target under the same name is a no-op (a package that both
    registers itself and declares the entry point); anything else under a taken name raises.
    """
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise ValueError(f"extractor name must be a non-empty string without surrounding spaces, got {name!r}")
    old = _registry.get(name)
    if old is not None:
        if old == target:
            return
        raise DuplicateExtractorError(
            f"entity extractor {name!r} is registered twice: {_describe(old)} ({_origin[name]}) "
            f"and {_describe(target)} ({origin})")
    _registry[name] = target
    _origin[name] = origin


def _describe(target: str | Callable[..., Any]) -> str:
    return target if isinstance(target, str) else f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', target)}"


def load_entry_points() -> None:
    """Add every extractor declared in the `radsteer.extractors` entry-point group (once)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        register(ep.name, ep.value, origin=f"entry point of {dist.name if dist else 'an installed package'}")


def names() -> list[str]:
    """Every registered extractor name, built-ins first (the CLI's choices and the schema's values)."""
    load_entry_points()
    return list(_registry)


def factory(name: str) -> Callable[..., Any]:
    """The callable registered under `name`, imported now if it was registered by path."""
    load_entry_points()
    if name not in _registry:
        raise UnknownExtractorError(f"unknown entity extractor {name!r}; choose one of {', '.join(_registry)}")
    target = _registry[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise ExtractorLoadError(f"entity extractor {name!r} ({target}, {_origin[name]}) cannot be loaded: "
                                     f"{type(exc).__name__}: {exc}") from exc
        target = obj
    if not callable(target):
        raise UnknownExtractorError(f"entity extractor {name!r} ({_describe(_registry[name])}) is not callable")
    return target


def get_extractor(name: str, **options: Any) -> Any:
    """Build the extractor registered under `name` with its keyword options."""
    return factory(name)(**options)


for _name, _target in BUILTIN.items():
    register(_name, _target, origin="built-in")
