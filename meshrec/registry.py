"""The registry plugins fill through their hooks (methods, datasets): one implementation."""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Iterator, TypeVar

__all__ = ["Registry", "RegistryEntry", "import_target"]


@dataclass(frozen=True)
class RegistryEntry:
    """A registered name: where its object lives, a one-line summary, and the plugin that added it.

    ``target`` is ``"package.module:attribute"`` (imported on first use, so that registering
    costs nothing) or the object itself.
    """

    name: str
    target: Any
    summary: str = ""
    plugin: str = ""

    def load(self) -> Any:
        """The target object, imported if it was given as a string, then checked."""
        target = import_target(self.target)
        self.check(target)
        return target

    def check(self, target: Any) -> None:
        """Raises TypeError when ``target`` is not what this kind of entry needs."""


def import_target(target: Any) -> Any:
    """``target`` itself, or the object a ``"package.module:attribute"`` string names."""
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    if not attribute:
        raise ValueError(f"a target must be 'module:attribute', got {target!r}")
    return getattr(importlib.import_module(module_name), attribute)


EntryT = TypeVar("EntryT", bound=RegistryEntry)


class Registry(Generic[EntryT]):
    """Names (lower case, letters, digits, '-' and '_') mapped to entries.

    The plugin manager sets ``current_plugin`` while a plugin's hook runs, so each entry records
    who registered it. A second registration of a name warns and keeps the first.
    """

    kind: ClassVar[str] = "entry"
    entry_class: ClassVar[type[RegistryEntry]] = RegistryEntry

    def __init__(self) -> None:
        self._entries: dict[str, EntryT] = {}
        self.current_plugin = ""

    def add(self, name: str, target: Any, summary: str = "") -> EntryT:
        """Registers ``target`` under ``name``; returns the entry kept for that name."""
        if not isinstance(name, str) or not name or name != name.lower() or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"{self.kind} names are lower-case words joined by '-' or '_', got {name!r}")
        entry = self.entry_class(name=name, target=target, summary=summary, plugin=self.current_plugin)
        existing = self._entries.get(name)
        if existing is not None:
            warnings.warn(
                f"meshrec: {self.kind} {name!r} is registered by both {existing.plugin!r} and {entry.plugin!r}; "
                f"keeping {existing.plugin!r}'s. Block one with MESHREC_DISABLE_PLUGINS.",
                stacklevel=2,
            )
            return existing
        self._entries[name] = entry
        return entry

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> EntryT:
        return self._entries[name]

    def __iter__(self) -> Iterator[EntryT]:
        return iter(sorted(self._entries.values(), key=lambda entry: entry.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)
