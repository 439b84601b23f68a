"""User code from outside the package: ``--import FILE_OR_MODULE``, ``imports:`` and entry points.

A plugin is any Python file or importable module that registers strategies (``@register``), data sets
(``register_dataset``) or backbones (``register_backbone``) when imported. Installed packages can
declare the same through entry points in the groups ``clpeft.strategies``, ``clpeft.datasets`` and
``clpeft.backbones`` (each entry point names a module or object; loading it registers). Imports are
recorded in the run's configuration, so Ray workers and resumed runs import them again.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from clpeft.errors import ClpeftError

_loaded_groups: set[str] = set()


def normalize_import(spec: str, base: Path | None = None) -> str:
    """A file path made absolute (relative to ``base``, e.g. the scenario's folder) or a module name as given."""
    if not isinstance(spec, str) or not spec.strip():
        raise ClpeftError(f"an import must be a file path or a module name, got {spec!r}")
    spec = spec.strip()
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            candidates = ([base / path] if base is not None else []) + [Path.cwd() / path]
            path = next((c for c in candidates if c.exists()), candidates[0])
        return str(path.resolve())
    return spec


def import_plugin(spec: str):
    """Import a plugin file or module (once); errors name the plugin and the fix."""
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise ClpeftError(f"plugin file {path} does not exist; check the --import / imports: path")
        name = "clpeft_plugin_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        loader_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            _guarded(lambda: loader_spec.loader.exec_module(module), f"plugin {path}", "fix the file")
        except ClpeftError:
            del sys.modules[name]
            raise
        return module
    try:
        return _guarded(lambda: importlib.import_module(spec), f"plugin module {spec!r}", "fix or reinstall it",
                        passthrough=(ModuleNotFoundError,))
    except ModuleNotFoundError as exc:
        raise ClpeftError(f"plugin module {spec!r} cannot be imported ({exc}); install it or give a file path") from exc


def _guarded(load, what: str, fix: str, passthrough: tuple = ()):
    """Run a plugin's import so that nothing in it can end the run silently: an exception, ``sys.exit`` (even
    ``sys.exit(0)``) or a stray ``KeyboardInterrupt`` at import becomes one line naming the plugin."""
    try:
        return load()
    except (ClpeftError, *passthrough):
        raise
    except SystemExit as exc:
        raise ClpeftError(f"{what} called sys.exit({exc.code!r}) while being imported, which would end the run "
                          f"with no result; {fix} (a plugin defines methods, it must not exit)") from None
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the user's code failed: say which and why
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ClpeftError(f"{what} failed to import ({type(exc).__name__}: {detail}); {fix}") from None


def import_plugins(specs) -> None:
    for spec in specs or []:
        import_plugin(spec)


def lookup(registry: dict, name: str, group: str, what: str):
    """``registry[name]``, loading installed packages' entry points of ``group`` on a miss; the error names the
    choices and how to add one's own."""
    if name not in registry:
        load_entry_points(group)
    if name not in registry:
        raise ClpeftError(f"unknown {what} {name!r}; choose one of {', '.join(sorted(registry))} "
                          f"(see `clpeft list`; one of your own: --import FILE)")
    return registry[name]


def load_entry_points(group: str) -> None:
    """Load every installed package's entry points of ``group`` (once per process)."""
    if group in _loaded_groups:
        return
    _loaded_groups.add(group)
    for entry in metadata.entry_points(group=group):
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken third-party plugin must not hide the others
            raise ClpeftError(f"entry point {entry.name} ({entry.value}) of group {group} failed to load "
                              f"({type(exc).__name__}); fix or uninstall that package") from exc
