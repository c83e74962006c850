"""The lessons' ``index.html`` in a real browser: headless Chromium driven by Playwright.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package
(its own browser download is not used). Skips with the reason when either is missing.
The page is built by :func:`trilemma.lessons.run_lessons` from two lessons with tiny
settings, one of which is set up so that one of its checks fails. The screenshots are
written to ``$TRILEMMA_TEST_ARTIFACTS`` (default: the pytest temporary folder) and their
paths printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trilemma.lessons import run_lessons

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("lessons_page")
    # depth-separation with ks = (1, 2): a shallow net of the same size can represent tri², so the check that it
    # has fewer pieces than the target fails, and the page must show a failing lesson.
    return run_lessons(out, ["error-decomposition", "depth-separation"], quick=True, overrides={
        "error-decomposition": {"repeats": 2},
        "depth-separation": {"ks": (1, 2), "restarts": 1, "iters": 50},
    })


@pytest.fixture(scope="module")
def page(suite, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    profile = tmp_path_factory.mktemp("chromium_profile")  # fresh profile; no network, no background services
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            pg = context.new_page()
            problems: list[str] = []
            pg.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}"))
            pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            pg.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            pg.on("request", lambda r: r.url.startswith(("http:", "https:")) and problems.append(f"network: {r.url}"))
            assert suite.index_path is not None
            pg.goto(suite.index_path.as_uri(), wait_until="load")
            pg.wait_for_function("Array.from(document.images).every(i => i.complete)")
            yield pg, problems
        finally:
            context.close()


def test_the_suite_has_a_failing_lesson(suite):
    supported = {r.name: r.supported for r in suite.results}
    assert supported == {"error-decomposition": True, "depth-separation": False}


def test_page_loads_offline_without_console_errors(page):
    pg, problems = page
    assert problems == []
    assert "default-src 'none'" in pg.get_attribute("meta[http-equiv='Content-Security-Policy']", "content")


def test_summary_lists_every_lesson_with_its_verdict(page, suite):
    pg, _ = page
    rows = pg.evaluate(
        "Array.from(document.querySelectorAll('#summary-table tbody tr')).map(r => "
        "[r.dataset.name, r.className, r.cells[2].innerText, r.cells[3].innerText])")
    assert [r[0] for r in rows] == [r.name for r in suite.results]
    for (_name, cls, verdict, passed), r in zip(rows, suite.results):
        assert cls == ("pass" if r.supported else "fail")
        assert verdict == ("supported" if r.supported else "NOT supported")
        assert passed == f"{sum(c.passed for c in r.checks)}/{len(r.checks)}"
    headline = pg.inner_text("#run-summary")
    assert "1 of 2 claims supported" in headline and "quick settings" in headline


def test_clicking_a_lesson_in_the_summary_scrolls_to_it(page):
    pg, _ = page
    pg.evaluate("window.scrollTo(0, 0)")
    pg.click("#summary-table a[href='#lesson-depth-separation']")
    pg.wait_for_function("location.hash === '#lesson-depth-separation'")
    top = pg.evaluate("document.getElementById('lesson-depth-separation').getBoundingClientRect().top")
    assert abs(top) < 5  # the section is at the top of the viewport


def test_every_check_is_shown_with_pass_or_fail_and_its_numbers(page, suite):
    pg, _ = page
    for r in suite.results:
        section = f"#lesson-{r.name}"
        assert pg.get_attribute(section, "data-supported") == str(r.supported).lower()
        shown = pg.evaluate(
            "(sel) => Array.from(document.querySelectorAll(sel + ' table.checks tbody tr')).map(t => "
            "[t.dataset.passed, t.cells[0].innerText, t.cells[1].innerText, t.cells[2].innerText])", section)
        assert len(shown) == len(r.checks)
        for (flag, badge, name, detail), check in zip(shown, r.checks):
            assert flag == str(check.passed).lower() and badge == ("pass" if check.passed else "fail")
            assert name == check.name and detail == check.detail
    # pass and fail are told apart by colour, not only by text
    colours = pg.evaluate(
        "[getComputedStyle(document.querySelector('.badge.pass')).backgroundColor, "
        "getComputedStyle(document.querySelector('.badge.fail')).backgroundColor]")
    assert colours[0] != colours[1]


def test_every_figure_is_rendered(page, suite):
    pg, _ = page
    rendered = pg.evaluate(
        "Array.from(document.querySelectorAll('figure.fig')).map(f => "
        "[f.dataset.name, f.querySelector('img').naturalWidth, f.querySelector('img').src.slice(0, 22)])")
    expected = sorted(f"{r.name}_{stem}" for r in suite.results for stem in r.figures)
    assert sorted(name for name, _, _ in rendered) == expected
    assert all(width > 100 and src == "data:image/png;base64," for _, width, src in rendered), rendered


def test_rerun_commands_and_parameters(page, suite):
    pg, _ = page
    commands = pg.evaluate("Array.from(document.querySelectorAll('pre.rerun')).map(p => p.innerText)")
    assert commands == [r.command for r in suite.results]
    assert all("--set" in c and "--quick" in c for c in commands)
    details = "#lesson-error-decomposition details"
    assert not pg.is_visible(f"{details} dl.kv")
    pg.click(f"{details} summary")
    assert pg.is_visible(f"{details} dl.kv") and "repeats" in pg.inner_text(f"{details} dl.kv")


def test_screenshot_artifact(page, tmp_path_factory):
    pg, _ = page
    folder = Path(os.environ.get("TRILEMMA_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    pg.evaluate("window.scrollTo(0, 0)")
    shot = folder / "lessons_index_top.png"
    pg.screenshot(path=str(shot))
    full = folder / "lessons_index_full.png"
    pg.screenshot(path=str(full), full_page=True)
    assert shot.stat().st_size > 10_000 and full.stat().st_size > shot.stat().st_size
    print(f"lessons index screenshots: {shot} {full}")
