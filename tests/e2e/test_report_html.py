"""report.html in a real browser (Debian's chromium, driven by playwright without a
downloaded browser), its escaping, re-rendering from report.json, and its size."""

import json
import os
import shutil

import pytest

from conftest import run_cli, script

pytestmark = pytest.mark.shares_machine

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def crash_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("crash")
    res = run_cli("probe", script("raise_in_worker.py"), "--out", str(out), "-q", "--stages", "baseline")
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.slow
def test_html_opens_in_chromium_with_no_errors_and_no_requests(crash_report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    console_errors, requests, page_errors = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=60_000,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: page_errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto("file://" + str(crash_report / "report.html"), timeout=30_000)
            verdict = page.locator("#verdict")
            assert verdict.is_visible()
            assert "Verdict: crash" in verdict.inner_text()
            # the hostile exception message is text on the page, not markup
            assert "<script>alert(1)</script>" in page.locator(".crash-message").first.inner_text()
            assert page.evaluate("document.querySelectorAll('script').length") == 0
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert console_errors == [] and page_errors == []
    assert requests == []
    assert os.path.getsize(tmp_path / "report.png") > 10_000


@pytest.mark.slow
def test_markup_in_messages_and_paths_is_escaped(crash_report):
    html = (crash_report / "report.html").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = (crash_report / "report.md").read_text()
    assert "<script>alert(1)</script>" not in md.split("```")[0]  # outside code blocks it is escaped


@pytest.mark.slow
def test_html_is_self_contained(crash_report):
    html = (crash_report / "report.html").read_text()
    for needle in ("http://", "https://", "<link", "<script", "@import", "src=\"/", "src=\"file"):
        assert needle not in html, needle
    assert "data:image/png;base64," in html  # plots are embedded


@pytest.mark.slow
def test_report_command_rerenders_without_running(crash_report, tmp_path):
    out = tmp_path / "again.md"
    res = run_cli("report", str(crash_report / "report.json"), "--format", "md", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Verdict: crash" in out.read_text()
    res = run_cli("report", str(crash_report / "report.json"), "--format", "html", "--out", str(tmp_path / "x.html"))
    assert res.returncode == 0 and "Verdict: crash" in (tmp_path / "x.html").read_text()


def test_report_command_bad_input(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    res = run_cli("report", str(tmp_path / "bad.json"))
    assert res.returncode == 2 and "not a readable report.json" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    res = run_cli("report", str(tmp_path / "other.json"))
    assert res.returncode == 2 and "schema_version 1" in res.stderr
    res = run_cli("report", str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "no such file" in res.stderr


def test_no_environment_variables_in_reports(tmp_path):
    secret = "sk-loaderdoctor-test-secret-0123456789"
    res = run_cli("probe", script("slow_getitem.py"), "--out", str(tmp_path), "-q", "--steps", "5",
                  "--stages", "baseline", env={"MY_API_TOKEN": secret})
    assert res.returncode == 0, res.stderr
    for name in ("report.json", "report.md", "report.html", "session.json"):
        assert secret not in (tmp_path / name).read_text(), name


@pytest.mark.slow
def test_report_json_has_the_contract_keys(crash_report):
    r = json.loads((crash_report / "report.json").read_text())
    assert r["schema_version"] == 1 and r["tool"]["name"] == "loaderdoctor"
    for key in ("target", "environment", "loaders", "baseline", "stages", "workers_sweep", "transforms", "collate",
                "hangs", "crashes", "verdict", "findings", "recommendation"):
        assert key in r, key
    assert {"path", "kind", "argv"} <= set(r["target"])
    assert {"python", "torch", "platform", "cpu_count_effective", "start_method_default", "gpus",
            "shm_bytes_total"} <= set(r["environment"])
    assert {"index", "role", "dataset", "num_workers", "batch_size", "pin_memory", "persistent_workers",
            "prefetch_factor", "start_method"} <= set(r["loaders"][0])
    assert {"steps", "samples_per_s", "data_wait_fraction", "step_s", "wait_s", "compute_s",
            "first_batch_s"} <= set(r["baseline"])
    assert all(s["status"] in ("ok", "hang", "crash", "failed", "skipped") for s in r["stages"])
    assert {"stage", "role", "signal", "exit_code", "exception_type", "message", "culprit"} <= set(r["crashes"][0])
    assert r["verdict"] in ("data-bound", "compute-bound", "balanced", "hang", "crash", "inconclusive")
    assert all({"id", "severity", "title", "evidence", "fix"} <= set(f) for f in r["findings"])
    assert {"num_workers", "pin_memory", "persistent_workers", "prefetch_factor", "multiprocessing_context",
            "measured_speedup"} <= set(r["recommendation"])
