"""Plugin discovery and the registries plugins fill.

Plugins are modules named in the ``meshrec`` entry-point group of installed distributions. A
plugin that fails to import (or whose hook raises) is reported, with its error, by
``meshrec plugins`` and by a warning, and skipped: meshrec itself keeps working.
``MESHREC_DISABLE_PLUGINS=a,b`` blocks plugins by entry-point or distribution name.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from meshrec import hookspecs
from meshrec.datasets import DatasetRegistry
from meshrec.detectors import DetectorRegistry
from meshrec.methods import MethodRegistry

__all__ = [
    "DISABLE_VARIABLE",
    "ENTRY_POINT_GROUP",
    "MeshrecPluginWarning",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "reset_plugin_manager",
]

ENTRY_POINT_GROUP = "meshrec"
DISABLE_VARIABLE = "MESHREC_DISABLE_PLUGINS"


class MeshrecPluginWarning(UserWarning):
    """A plugin could not be loaded or its hook failed; it is skipped."""


@dataclass
class PluginInfo:
    """What ``meshrec plugins`` shows for one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    methods: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    detectors: list[str] = field(default_factory=list)
    error: str | None = None
    blocked: bool = False

    @property
    def status(self) -> str:
        return "blocked" if self.blocked else ("error" if self.error else "ok")

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "methods": list(self.methods),
            "datasets": list(self.datasets),
            "detectors": list(self.detectors),
            "status": self.status,
            "error": self.error,
        }


def _blocked_names() -> set[str]:
    return {name.strip().lower() for name in os.environ.get(DISABLE_VARIABLE, "").split(",") if name.strip()}


class PluginManager:
    """Finds plugins, runs their registration hooks, and holds the resulting registries.

    Args:
        discover: load the installed entry points (False gives an empty manager, for tests).
    """

    def __init__(self, discover: bool = True) -> None:
        self._pluggy = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pluggy.add_hookspecs(hookspecs)
        self._infos: dict[str, PluginInfo] = {}
        self._methods: MethodRegistry | None = None
        self._datasets: DatasetRegistry | None = None
        self._detectors: DetectorRegistry | None = None
        self._lock = threading.RLock()
        if discover:
            self._discover()

    # -- discovery ------------------------------------------------------------------------------
    def _discover(self) -> None:
        blocked = _blocked_names()
        entry_points = sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
        for entry_point in entry_points:
            dist = entry_point.dist
            info = PluginInfo(
                name=entry_point.name,
                module=entry_point.value,
                distribution=dist.name if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            if entry_point.name in self._infos:
                continue  # the same distribution visible twice on sys.path
            self._infos[entry_point.name] = info
            if entry_point.name.lower() in blocked or (info.distribution or "").lower() in blocked:
                info.blocked = True
                continue
            try:
                plugin = entry_point.load()
            except Exception as error:  # a broken plugin must never break meshrec
                self._fail(info, f"import failed: {type(error).__name__}: {error}")
                continue
            self._register(plugin, info)

    def _fail(self, info: PluginInfo, message: str) -> None:
        info.error = message
        warnings.warn(
            f"meshrec: plugin {info.name!r} ({info.distribution or info.module}) is skipped: {message}",
            MeshrecPluginWarning,
            stacklevel=3,
        )

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self._pluggy.register(plugin, name=info.name)
        except Exception as error:
            self._fail(info, f"invalid hooks: {error}")
            return
        unknown = [caller.name for caller in self._pluggy.get_hookcallers(plugin) or [] if not caller.has_spec()]
        if unknown:
            self._pluggy.unregister(plugin)
            self._fail(info, f"implements unknown hooks {unknown} (misspelled? see meshrec.hookspecs)")

    def register(self, plugin: Any, name: str | None = None) -> PluginInfo:
        """Registers an in-process plugin (a module or an object with hook functions)."""
        with self._lock:
            name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
            if name in self._infos:
                raise ValueError(f"a plugin named {name!r} is already registered")
            info = PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__))
            self._infos[name] = info
            self._register(plugin, info)
            self._methods = self._datasets = self._detectors = None
            return info

    def unregister(self, name: str) -> None:
        with self._lock:
            plugin = self._pluggy.get_plugin(name)
            if plugin is not None:
                self._pluggy.unregister(plugin)
            self._infos.pop(name, None)
            self._methods = self._datasets = self._detectors = None

    # -- registries -----------------------------------------------------------------------------
    def _collect(self, hook_name: str, registry: MethodRegistry | DatasetRegistry | DetectorRegistry, kind: str) -> None:
        for info in self._infos.values():
            setattr(info, kind, [])
        caller = getattr(self._pluggy.hook, hook_name)
        for impl in caller.get_hookimpls():
            info = self._infos.get(impl.plugin_name)
            before = set(registry.names())
            registry.current_plugin = impl.plugin_name
            try:
                impl.function(**{arg: registry for arg in impl.argnames})
            except Exception as error:
                if info is not None:
                    self._fail(info, f"{hook_name} raised {type(error).__name__}: {error}")
                continue
            finally:
                registry.current_plugin = ""
            if info is not None:
                getattr(info, kind).extend(sorted(set(registry.names()) - before))

    def methods(self) -> MethodRegistry:
        """The method registry, filled by every plugin's ``meshrec_register_methods``."""
        with self._lock:
            if self._methods is None:
                registry = MethodRegistry()
                self._collect("meshrec_register_methods", registry, "methods")
                self._methods = registry
            return self._methods

    def datasets(self) -> DatasetRegistry:
        """The dataset registry, filled by every plugin's ``meshrec_register_datasets``."""
        with self._lock:
            if self._datasets is None:
                registry = DatasetRegistry()
                self._collect("meshrec_register_datasets", registry, "datasets")
                self._datasets = registry
            return self._datasets

    def detectors(self) -> DetectorRegistry:
        """The detector registry, filled by every plugin's ``meshrec_register_detectors``."""
        with self._lock:
            if self._detectors is None:
                registry = DetectorRegistry()
                self._collect("meshrec_register_detectors", registry, "detectors")
                self._detectors = registry
            return self._detectors

    def plugins(self) -> list[PluginInfo]:
        """Every plugin found, loaded or not, with its methods, datasets and detectors."""
        self.methods()
        self.datasets()
        self.detectors()
        return sorted(self._infos.values(), key=lambda info: info.name)

    def plugin(self, name: str) -> PluginInfo | None:
        return self._infos.get(name)


_manager: PluginManager | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager, created (and plugins discovered) on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = PluginManager()
        return _manager


def reset_plugin_manager(manager: PluginManager | None = None) -> None:
    """Forgets the discovered plugins (rediscovered on next use), or installs ``manager``."""
    global _manager
    with _manager_lock:
        _manager = manager
