"""analysis.fixpatch: the fix as a unified diff of the user's DataLoader call."""

import difflib
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from loaderdoctor.analysis.fixpatch import (
    before_after,
    dataloader_patch,
    parse_site,
    patched_source,
)

S = {"num_workers": 4, "persistent_workers": True}


def _write(tmp_path, body, name="train.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body).lstrip("\n"))
    return str(p)


def _changed(path, line, settings):
    """The patched file, after checking the diff's headers and that it ends with a newline."""
    new = patched_source(path, line, settings)
    diff = dataloader_patch(path, line, settings)
    assert new is not None and diff is not None
    name = os.path.basename(path)
    assert diff.startswith(f"--- a/{name}\n+++ b/{name}\n@@ ") and diff.endswith("\n")
    with open(path) as fh:
        old = fh.read()
    expect = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"a/{name}", f"b/{name}"))
    assert diff == expect
    return new


def test_single_line_call(tmp_path):
    p = _write(tmp_path, """
        from torch.utils.data import DataLoader
        loader = DataLoader(ds, batch_size=8)
        print(loader)
    """)
    new = _changed(p, 2, S)
    assert new.splitlines()[1] == "loader = DataLoader(ds, batch_size=8, num_workers=4, persistent_workers=True)"
    assert before_after(p, 2, S) == ("DataLoader(ds, batch_size=8)",
                                     "DataLoader(ds, batch_size=8, num_workers=4, persistent_workers=True)")


def test_multi_line_call_with_comments_and_trailing_comma(tmp_path):
    p = _write(tmp_path, """
        loader = DataLoader(
            ds,
            batch_size=16,  # sixteen (a comment, with a comma)
            # shuffle below
            shuffle=True,
        )
    """)
    new = _changed(p, 1, {**S, "multiprocessing_context": "spawn"})
    assert new == textwrap.dedent("""\
        loader = DataLoader(
            ds,
            batch_size=16,  # sixteen (a comment, with a comma)
            # shuffle below
            shuffle=True,
            num_workers=4,
            persistent_workers=True,
            multiprocessing_context='spawn',
        )
    """)


def test_multi_line_call_without_trailing_comma(tmp_path):
    p = _write(tmp_path, """
        loader = DataLoader(
            ds,
            batch_size=4  # four
        )
    """)
    assert _changed(p, 1, S) == textwrap.dedent("""\
        loader = DataLoader(
            ds,
            batch_size=4,  # four
            num_workers=4,
            persistent_workers=True
        )
    """)


def test_existing_keyword_replaced(tmp_path):
    p = _write(tmp_path, """
        loader = DataLoader(ds, num_workers=2, batch_size=8,
                            pin_memory=False)
    """)
    new = _changed(p, 1, {"num_workers": 4, "pin_memory": True})
    assert new == ("loader = DataLoader(ds, num_workers=4, batch_size=8,\n"
                   "                    pin_memory=True)\n")


def test_keywords_added_and_quotes_follow_the_file(tmp_path):
    p = _write(tmp_path, """
        name = "train"
        loader = DataLoader(ds, batch_size=8, shuffle=True)
    """)
    new = _changed(p, 2, {"num_workers": 2, "prefetch_factor": 4, "multiprocessing_context": "forkserver"})
    assert new.splitlines()[1] == ('loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, '
                                   'prefetch_factor=4, multiprocessing_context="forkserver")')


def test_nothing_to_change(tmp_path):
    p = _write(tmp_path, "loader = DataLoader(ds, num_workers=4, persistent_workers=True)\n")
    assert dataloader_patch(p, 1, S) is None


def test_call_inside_a_helper_function(tmp_path):
    p = _write(tmp_path, """
        import torch

        def make_loader(ds, bs):
            return DataLoader(ds, batch_size=bs,
                              collate_fn=collate(ds))

        train = make_loader(train_ds, 32)
        val = make_loader(val_ds, 64)
    """)
    site = parse_site("train.py:4 < train.py:7")
    assert site == [("train.py", 4), ("train.py", 7)]
    new = _changed(p, site[0][1], S)
    assert "collate_fn=collate(ds), num_workers=4, persistent_workers=True)" in new
    assert new.count("num_workers") == 1 and "make_loader(train_ds, 32)\n" in new
    # the line of the continuation still finds the DataLoader call, not collate()
    assert patched_source(p, 5, S) == new


def test_attribute_call_and_positional_num_workers(tmp_path):
    p = _write(tmp_path, """
        import torch
        a = torch.utils.data.DataLoader(ds, batch_size=4)
        b = torch.utils.data.DataLoader(ds, 4, True, None, None, 0)
    """)
    assert _changed(p, 2, S).splitlines()[1] == \
        "a = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=4, persistent_workers=True)"
    assert _changed(p, 3, S).splitlines()[2] == \
        "b = torch.utils.data.DataLoader(ds, 4, True, None, None, 4, persistent_workers=True)"


def test_subclass_or_wrapper_call(tmp_path):
    p = _write(tmp_path, """
        loader = MyDataLoader(ds, num_workers=1)
        other = build_loader(ds)
    """)
    assert "MyDataLoader(ds, num_workers=4, persistent_workers=True)" in _changed(p, 1, S)
    assert "build_loader(ds, num_workers=4, persistent_workers=True)" in _changed(p, 2, S)


def test_loader_kwargs_are_merged(tmp_path):
    p = _write(tmp_path, """
        loader_kwargs = {"num_workers": 0}
        loader = DataLoader(ds, batch_size=8, **loader_kwargs)
    """)
    new = _changed(p, 2, S)
    assert new.splitlines()[1] == ('loader = DataLoader(ds, batch_size=8, '
                                   '**{**loader_kwargs, "num_workers": 4, "persistent_workers": True})')
    # an explicit keyword beside **kwargs is replaced in place
    p2 = _write(tmp_path, "loader = DataLoader(ds, num_workers=0, **kw)\n", "t2.py")
    assert _changed(p2, 1, {"num_workers": 4}) == "loader = DataLoader(ds, num_workers=4, **kw)\n"


def test_no_call_on_the_line(tmp_path):
    p = _write(tmp_path, """
        import torch

        loader = DataLoader(ds)
    """)
    assert dataloader_patch(p, 2, S) is None
    assert before_after(p, 1, S) is None
    assert dataloader_patch(str(tmp_path / "missing.py"), 1, S) is None
    bad = _write(tmp_path, "loader = DataLoader(ds\n", "bad.py")
    assert dataloader_patch(bad, 1, S) is None


def test_relto_and_file_without_final_newline(tmp_path):
    (tmp_path / "src").mkdir()
    p = tmp_path / "src" / "train.py"
    p.write_text("loader = DataLoader(ds)")
    diff = dataloader_patch(str(p), 1, {"num_workers": 2}, relto=str(tmp_path))
    assert diff.startswith("--- a/src/train.py\n+++ b/src/train.py\n")
    assert diff.endswith("+loader = DataLoader(ds, num_workers=2)\n\\ No newline at end of file\n")


SCRIPT = '''
import torch
from torch.utils.data import DataLoader, Dataset


class Squares(Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.tensor([float(i * i)])


def main():
    loader = DataLoader(
        Squares(),
        batch_size=4,
        num_workers=0,
    )
    n = 0
    for _ in loader:
        n += 1
    assert n == 3, n
    print("batches", n, loader.num_workers, loader.persistent_workers)


if __name__ == "__main__":
    main()
'''


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_patch_applies_with_git_and_the_script_runs(tmp_path):
    repo = tmp_path / "repo"
    (repo / "src").mkdir(parents=True)
    script = repo / "src" / "train.py"
    script.write_text(SCRIPT.lstrip("\n"))
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    run = {"capture_output": True, "text": True, "timeout": 30}
    subprocess.run(git + ["init", "-q"], cwd=repo, check=True, **run)
    subprocess.run(git + ["add", "."], cwd=repo, check=True, **run)
    subprocess.run(git + ["commit", "-qm", "init"], cwd=repo, check=True, **run)
    before = script.read_text().splitlines()
    line = next(i for i, t in enumerate(before, 1) if "DataLoader(" in t and "import" not in t)

    patch = dataloader_patch(str(script), line, {"num_workers": 2, "persistent_workers": True})
    (tmp_path / "fix.patch").write_text(patch)
    # applied in the script's folder (the default relto), inside the repository
    subprocess.run(git + ["apply", "--check", str(tmp_path / "fix.patch")], cwd=script.parent, check=True, **run)
    subprocess.run(git + ["apply", str(tmp_path / "fix.patch")], cwd=script.parent, check=True, **run)

    status = subprocess.run(git + ["status", "--porcelain"], cwd=repo, check=True, **run).stdout
    assert status.strip() == "M src/train.py"
    after = script.read_text().splitlines()
    end = before.index("    )", line)  # the call's closing line
    ops = difflib.SequenceMatcher(a=before, b=after).get_opcodes()
    changed = [(i1, i2) for tag, i1, i2, _, _ in ops if tag != "equal"]
    assert changed and all(line - 1 <= i1 and i2 <= end + 1 for i1, i2 in changed)
    assert "        num_workers=2,\n        persistent_workers=True,\n    )" in script.read_text()

    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "batches 3 2 True"
