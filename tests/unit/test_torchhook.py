"""The runner installs its hooks when the script imports torch (child/torchhook.py), and
records what the script did before: a package made on the fly stands in for torch."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

from loaderdoctor.child import torchhook


@pytest.fixture
def fakepkg(tmp_path, monkeypatch):
    name = f"ldfake_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("import os\nLOADED_WITH = os.environ.get('LD_FAKE_THREADS')\n")
    (pkg / "_lazy.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for m in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[m]


def test_the_callback_comes_once_the_import_is_complete_with_what_came_before(fakepkg, monkeypatch):
    seen = []
    snap = torchhook.snapshot()
    finders = len(sys.meta_path)

    def cb(seconds, before):
        mod = sys.modules[fakepkg]
        seen.append((seconds, before, mod.LOADED_WITH))

    assert torchhook.after_import(fakepkg, cb, snap) is False
    assert seen == [] and len(sys.meta_path) == finders + 1
    monkeypatch.setenv("LD_FAKE_THREADS", "1")  # the script sets a variable, then imports
    mod = importlib.import_module(fakepkg)
    assert len(seen) == 1
    seconds, before, loaded_with = seen[0]
    assert loaded_with == "1" and seconds >= 0.0
    assert before["env"] == ["LD_FAKE_THREADS"] and before["extensions"] == []
    assert before["values"] == {"LD_FAKE_THREADS": "1"}  # for the warm start, in memory (the runner splits it off)
    assert len(sys.meta_path) == finders  # the finder removed itself
    assert "exec_module" not in vars(mod.__spec__.loader)  # the module's loader is its own again
    importlib.reload(mod)
    assert len(seen) == 1  # once


def test_a_submodule_is_watched_too_and_an_unchanged_environment_reads_empty(fakepkg):
    seen = []
    importlib.import_module(fakepkg)
    torchhook.after_import(f"{fakepkg}._lazy", lambda s, b: seen.append(b), torchhook.snapshot())
    importlib.import_module(f"{fakepkg}._lazy")
    assert seen == [{"env": [], "extensions": [], "values": {}}]


def test_a_module_loaded_already_calls_back_at_once_without_a_before(fakepkg):
    importlib.import_module(fakepkg)
    seen = []
    assert torchhook.after_import(fakepkg, lambda s, b: seen.append((s, b)), torchhook.snapshot()) is True
    assert seen == [(0.0, None)]


def test_a_failing_import_leaves_no_finder_behind(tmp_path, monkeypatch):
    name = f"ldbroken_{tmp_path.name}".replace("-", "_")
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finders = len(sys.meta_path)
    seen = []
    torchhook.after_import(name, lambda s, b: seen.append(b), torchhook.snapshot())
    with pytest.raises(RuntimeError):
        importlib.import_module(name)
    assert seen == [] and len(sys.meta_path) == finders
    sys.modules.pop(name, None)


def test_only_compiled_modules_outside_the_standard_library_count_as_extensions():
    exts = torchhook.loaded_extensions()
    assert all(not m.startswith(("loaderdoctor", "psutil")) for m in exts)
    assert "_json" not in exts and "math" not in exts  # the standard library's own
    import numpy  # noqa: F401  (compiled, not the standard library's)

    assert any(m.startswith("numpy") for m in torchhook.loaded_extensions())


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Three packages made on the fly in a folder taken for site-packages, and a module of the
    script's own beside it (the folder is not one of the install roots)."""
    tag = f"{os.getpid()}_{tmp_path.name}".replace("-", "_")
    site_dir, own_dir = tmp_path / "site-packages", tmp_path / "script"
    names = {k: f"ld{k}_{tag}" for k in ("a", "b", "c", "own")}
    for key, name in names.items():
        folder = (own_dir if key == "own" else site_dir) / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.syspath_prepend(str(own_dir))
    monkeypatch.setattr(torchhook, "_install_roots", lambda: (os.path.join(os.path.realpath(site_dir), ""),))
    yield names
    for m in [m for m in sys.modules if m in names.values()]:
        del sys.modules[m]


def test_the_package_watch_lists_installed_imports_in_order_with_their_environment(installed, monkeypatch):
    finders = len(sys.meta_path)
    watch = torchhook.watch_packages(torchhook.snapshot())
    try:
        importlib.import_module(installed["a"])
        import json  # noqa: F401  (the standard library is not listed)
        with pytest.raises(ImportError):
            importlib.import_module(f"ldmissing_{installed['a']}")  # an optional import that fails: skipped
        monkeypatch.setenv("LD_WATCH_SECRET", "s3cret")  # the script sets a variable between two imports
        importlib.import_module(installed["b"])
        importlib.import_module(installed["own"])  # the script's own module ends the list
        importlib.import_module(installed["c"])
    finally:
        event, values = watch.finish()
    assert len(sys.meta_path) == finders  # it stepped out
    assert event["e"] == "packages" and event["names"] == [installed["a"], installed["b"]]
    assert event["env"] == [[], ["LD_WATCH_SECRET"]]  # names only in the event
    assert installed["own"] in event["stopped"] and "not an installed package" in event["stopped"]
    assert values == [{"e": "env", "m": installed["b"], "values": {"LD_WATCH_SECRET": "s3cret"}}]
    assert "s3cret" not in repr(event)


def test_a_package_still_importing_when_torch_completes_comes_first(installed):
    # `import lightning` before `import torch`: lightning's import is under way when torch's completes
    mod = importlib.import_module(installed["c"])
    mod.__spec__._initializing = True
    try:
        watch = torchhook.watch_packages(torchhook.snapshot())
        importlib.import_module(installed["a"])
    finally:
        mod.__spec__._initializing = False
        event, _ = watch.finish()
    assert event["names"] == [installed["c"], installed["a"]] and event["stopped"] is None


def test_the_package_list_ends_where_the_script_changed_directory(installed, tmp_path, monkeypatch):
    watch = torchhook.watch_packages(torchhook.snapshot())
    try:
        importlib.import_module(installed["a"])
        monkeypatch.chdir(tmp_path)
        importlib.import_module(installed["b"])
    finally:
        event, _ = watch.finish()
    assert event["names"] == [installed["a"]] and "working directory" in event["stopped"]


def test_a_package_probed_early_and_imported_later_takes_the_place_of_its_import(installed, monkeypatch):
    import importlib.util

    watch = torchhook.watch_packages(torchhook.snapshot())
    try:
        assert importlib.util.find_spec(installed["b"]) is not None  # transformers-style availability probe
        importlib.import_module(installed["a"])
        monkeypatch.setenv("LD_WATCH_LATE", "1")
        importlib.import_module(installed["b"])
    finally:
        event, values = watch.finish()
    assert event["names"] == [installed["a"], installed["b"]] and event["env"] == [[], ["LD_WATCH_LATE"]]
    assert event["where"][0].endswith(os.path.join("site-packages", installed["a"], "__init__.py"))
