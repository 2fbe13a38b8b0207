"""Install the hooks when the script imports torch, not before.

`python train.py` imports torch where the script does, after whatever the script did first.
Scripts set thread and device variables before that import on purpose
(`os.environ["OMP_NUM_THREADS"] = "1"; import torch`): the OpenMP runtime reads them once,
when torch loads it. A runner that imported torch itself before the script would run every
such script with other settings than the user's. So the runner waits: a finder on
sys.meta_path sees the first import of `torch`, lets the normal machinery load it, and
calls back once torch's own import is complete (before the statement that imported it goes
on), where the hooks are installed. The finder removes itself then.

What the script did before torch was imported (environment variables it set, other
compiled extensions it loaded first) is recorded, and the same for torch's heavy lazy parts
(PRELOADABLE): a warm start (orchestrate/warmstart.py) that has them loaded already stands
for `python train.py` only when the script did neither before each.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES
from importlib.util import find_spec
from typing import Callable

OURS = ("loaderdoctor", "psutil")  # loaded by the runner itself before the script starts
# Parts of torch it imports lazily, on first use, that nearly every training script uses: the
# first optimizer built imports torch._dynamo (800 modules, ~1.1 s here). The runner records
# the state each was first imported in; a warm process may load one ahead when the baseline
# shows the script imported it with nothing changed (orchestrate/warmstart.py).
PRELOADABLE = ("torch._dynamo",)


class _FirstImport(MetaPathFinder):
    def __init__(self, name: str, callback: Callable[[float, dict | None], None], snap: dict | None):
        self.name = name
        self.callback = callback
        self.snap = snap
        self.busy = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or getattr(self.busy, "on", False):
            return None
        self.busy.on = True
        try:
            spec = find_spec(fullname)  # the rest of sys.meta_path (this finder steps aside)
        finally:
            self.busy.on = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        orig_exec = loader.exec_module
        finder = self

        def exec_module(module):
            before = before_import(finder.snap, finder.name) if finder.snap is not None else None
            t0 = time.perf_counter()
            try:
                orig_exec(module)
            finally:
                try:
                    del loader.exec_module  # the loader is the module's own again
                except AttributeError:
                    pass
                finder.remove()
            finder.callback(time.perf_counter() - t0, before)

        loader.exec_module = exec_module  # on this loader object only: module.__loader__ stays the real one
        return spec

    def remove(self) -> None:
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass


def after_import(name: str, callback: Callable[[float, dict | None], None], snap: dict | None = None) -> bool:
    """Call callback(import seconds, what the script did before: see before_import) once
    module `name` has been imported; at once (0.0, None) when it is loaded already. `snap`
    (from snapshot()) is the state the script started from. Returns whether it was loaded."""
    if name in sys.modules:
        callback(0.0, None)
        return True
    sys.meta_path.insert(0, _FirstImport(name, callback, snap))
    return False


def snapshot() -> dict:
    """The process's environment and loaded packages, taken just before the script starts."""
    return {"env": dict(os.environ), "modules": set(sys.modules), "cwd": _cwd()}


def before_import(snap: dict, name: str = "torch") -> dict:
    """What the script did before it imported `name`: the environment variables it set or
    removed, and the compiled extension modules outside the standard library it loaded, in
    the order they were loaded (native libraries are where load order can matter; pure Python
    packages load the same in any order). Ours are left out."""
    env = snap["env"]
    now = dict(os.environ)
    changed = sorted(k for k in set(env) | set(now) if env.get(k) != now.get(k))
    known = snap["modules"]
    return {"env": changed, "extensions": [m for m in list(sys.modules) if m not in known and _foreign_extension(m)],
            "values": {k: now.get(k) for k in changed}}  # None: removed. Never written: see the runner


def loaded_extensions() -> list[str]:
    """Every compiled extension module outside the standard library loaded in this process."""
    return sorted(m for m in list(sys.modules) if _foreign_extension(m))


def _stdlib_or_ours(top: str) -> bool:
    return top in getattr(sys, "stdlib_module_names", ()) or top in OURS


def _foreign_extension(name: str) -> bool:
    if _stdlib_or_ours(name.partition(".")[0]):
        return False
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None) or ""
    return path.endswith(tuple(EXTENSION_SUFFIXES))


class PackageWatch(MetaPathFinder):
    """The installed packages the script imports after torch, in its order, up to its first
    DataLoader iterator, each with the environment variables changed by then (the script's
    and the earlier packages': cv2 sets LD_LIBRARY_PATH, MONAI CUBLAS_WORKSPACE_CONFIG): what
    a warm process may import ahead, each under that environment, for the stages after the
    baseline (Lightning or MONAI take ~5 s to import here, in every stage). The list ends at
    the first module that is not an installed package (the script's own modules are the
    user's code, which a warm process never runs) and where the script changed its working
    directory first. A package still importing when torch's import completed (`import
    lightning` before `import torch`) comes first. A name's place is that of its last lookup
    before it was loaded: a package probed with importlib.util.find_spec (transformers probes
    dozens) and imported later takes the place of its import. It only looks, and never
    raises: every import goes on as it would."""

    def __init__(self, snap: dict) -> None:
        self.launch = snap["env"]
        self.cwd = snap.get("cwd")
        self.stopped: str | None = None
        self.last: dict = {}
        self.changed: dict = {}  # the variables changed since the script started: {name: value or None}
        self.order: dict[str, tuple[int, dict]] = {}  # name -> (sequence of its last lookup, environment then)
        self.seq = 0
        for n in list(sys.modules):
            if "." not in n and _initializing(n) and _third_party_name(n):
                self._add(n)

    def _add(self, name: str) -> None:
        now = dict(os.environ)
        if now != self.last:
            self.last = now
            keys = set(now) | set(self.launch)
            self.changed = {k: now.get(k) for k in sorted(keys) if now.get(k) != self.launch.get(k)}
        self.seq += 1
        self.order[name] = (self.seq, self.changed)

    def find_spec(self, fullname, path=None, target=None):
        try:
            if "." not in fullname and self.stopped is None and _third_party_name(fullname):
                if _cwd() != self.cwd:  # a package may read its directory at import: the warm process has another
                    self.stopped = f"the script changed its working directory before importing {fullname}"
                else:
                    self._add(fullname)
        except Exception:  # never the script's problem
            pass
        return None

    def finish(self) -> tuple[dict, list[dict]]:
        """Stop watching. Returns the "packages" event ({names, where: each one's folder, env:
        the names of the variables changed by each one's import, stopped: why the list ends
        early}) and an "env" event of values for each package imported under a changed
        environment (the parent keeps those in memory only: they may be secrets)."""
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        roots = _install_roots()
        names, where, env_names, values, stopped = [], [], [], [], self.stopped
        for n, (_seq, env) in sorted(self.order.items(), key=lambda kv: kv[1][0]):
            if n not in sys.modules:  # looked up, never loaded (an optional import that failed): nothing to repeat
                continue
            place = module_location(sys.modules[n])
            if place is None or not place.startswith(roots):
                stopped = f"{n} is not an installed package"
                break
            names.append(n)
            where.append(place)
            env_names.append(sorted(env))
            if env:
                values.append({"e": "env", "m": n, "values": env})
        return {"e": "packages", "names": names, "where": where, "env": env_names, "stopped": stopped}, values


def watch_packages(snap: dict) -> PackageWatch | None:
    try:
        w = PackageWatch(snap)
    except Exception:  # the script's import of torch goes on; the stages after it start without its packages
        return None
    sys.meta_path.insert(0, w)
    return w


def _cwd() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def _third_party_name(name: str) -> bool:
    return not (name.startswith("_") or _stdlib_or_ours(name) or name in ("torch", "__main__", "__mp_main__"))


def _initializing(name: str) -> bool:
    try:
        return bool(getattr(getattr(sys.modules.get(name), "__spec__", None), "_initializing", False))
    except Exception:
        return False


def module_location(mod) -> str | None:
    try:
        path = getattr(mod, "__file__", None)
        if not path:
            paths = list(getattr(mod, "__path__", None) or [])
            path = paths[0] if paths else None
        return os.path.realpath(path) if isinstance(path, str) else None
    except Exception:  # a lazy module object may raise on attribute access
        return None


def _install_roots() -> tuple[str, ...]:
    import site

    roots = list(site.getsitepackages()) + [site.getusersitepackages()]
    roots += [p for p in sys.path if os.path.basename(p.rstrip(os.sep)) in ("site-packages", "dist-packages")]
    return tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)
