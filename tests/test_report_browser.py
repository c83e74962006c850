"""The HTML report in a real browser: headless Chromium driven by Playwright.

Needs Debian's ``chromium`` (``/usr/bin/chromium``) and the ``playwright`` Python package
(its own browser download is not used). Skips with the reason when either is missing.
The screenshot is written to ``$TRILEMMA_TEST_ARTIFACTS`` (default: the pytest temporary
folder) and its path printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trilemma.analysis import synthetic_curves, synthetic_results, verdict
from trilemma.report import build_report

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    results = synthetic_results(seed=2).iloc[::5].drop(
        columns=["ntk_bound", "gen_indicator", "jacobian_path_sum", "ntk_lambda_min"]).reset_index(drop=True)
    v = verdict(results)
    curves = synthetic_curves(results, [a.champion for a in v.axes], epochs=12)
    out = tmp_path_factory.mktemp("browser_report")
    paths = build_report(results, out, curves=curves, n_boot=50, figures=("curves", "pareto"),
                         metadata={"study": "browser-test", "wall_time_s": 12.0})
    return paths, results


@pytest.fixture(scope="module")
def page(report, tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    paths, _ = report
    # Fresh profile per run; no network, no background services.
    profile = tmp_path_factory.mktemp("chromium_profile")
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
            pg.goto(paths.html.as_uri(), wait_until="load")
            pg.wait_for_function("Array.from(document.images).every(i => i.complete)")
            yield pg, problems
        finally:
            context.close()


def test_page_loads_without_console_errors(page):
    pg, problems = page
    assert problems == []


def test_verdict_and_every_figure_are_shown(page, report):
    pg, _ = page
    paths, _ = report
    headline = pg.inner_text("#verdict-headline")
    assert headline.startswith("No free lunch")
    # The verdict is the first section, visible without scrolling.
    assert pg.evaluate("document.querySelector('main section').id") == "topology"  # the paper's trends first
    assert pg.is_visible("#sign-summary") and pg.is_visible("#verdict-headline")
    assert pg.locator("#verdict-headline").is_visible()
    rendered = pg.evaluate(
        "Array.from(document.querySelectorAll('figure.fig')).map(f => "
        "[f.dataset.name, f.querySelector('img').naturalWidth])")
    assert sorted(name for name, _ in rendered) == sorted(f.name for f in paths.figures)
    assert all(width > 100 for _, width in rendered), rendered


def _column(pg, name: str) -> list[str]:
    return pg.evaluate(
        """(name) => {
            const ths = Array.from(document.querySelectorAll('#arch-table thead th'));
            const i = ths.findIndex(th => th.dataset.col === name);
            return Array.from(document.querySelectorAll('#arch-table tbody tr'))
                .filter(r => !r.hidden).map(r => r.cells[i].dataset.value);
        }""",
        name,
    )


def test_clicking_a_header_sorts_the_table(page, report):
    pg, _ = page
    _, results = report
    assert len(_column(pg, "arch")) == len(results)
    pg.click("#arch-table th[data-col='convergence_epoch']")
    up = [float(v) for v in _column(pg, "convergence_epoch")]
    assert up == sorted(up) and up[0] < up[-1]
    assert pg.get_attribute("#arch-table th[data-col='convergence_epoch']", "aria-sort") == "ascending"
    pg.click("#arch-table th[data-col='convergence_epoch']")
    down = [float(v) for v in _column(pg, "convergence_epoch")]
    assert down == sorted(down, reverse=True)
    pg.click("#arch-table th[data-col='arch']")
    names = _column(pg, "arch")
    assert names == sorted(names)


def test_filtering_the_table(page, report):
    pg, _ = page
    _, results = report
    pg.fill("#arch-filter", "P>=3")
    ps = [float(v) for v in _column(pg, "P")]
    assert ps and all(p >= 3 for p in ps) and len(ps) == int((results["P"] >= 3).sum())
    assert pg.inner_text("#row-count") == f"{len(ps)} of {len(results)} architectures"
    pg.fill("#arch-filter", "")
    pg.check("#pareto-only")
    assert len(_column(pg, "arch")) == pg.evaluate("document.querySelectorAll('#arch-table tr.pareto').length") > 0
    pg.uncheck("#pareto-only")
    assert len(_column(pg, "arch")) == len(results)


def test_screenshot_artifact(page, tmp_path_factory):
    pg, _ = page
    folder = Path(os.environ.get("TRILEMMA_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    pg.evaluate("window.scrollTo(0, 0)")
    shot = folder / "report_top.png"
    pg.screenshot(path=str(shot))
    full = folder / "report_full.png"
    pg.screenshot(path=str(full), full_page=True)
    assert shot.stat().st_size > 10_000 and full.stat().st_size > shot.stat().st_size
    print(f"report screenshots: {shot} {full}")
