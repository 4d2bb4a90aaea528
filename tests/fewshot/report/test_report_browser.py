"""The report in headless Chromium: loads without console errors, plots and tables visible, printable.

Chromium comes from the OS packages (`.ci/run` installs Debian's `chromium`); Playwright drives
it (`executable_path`, so Playwright's own browser download is not needed). Saves the
screenshot that docs/report.md shows, `docs/report.png`.
"""
import os
import shutil
from pathlib import Path

import pytest

from fewshot.report import write_report
from fewshot.results.document import find_results_files, read_results

REPO = Path(__file__).resolve().parents[3]
DEMO_RESULTS = Path(__file__).parent / "data" / "demo-100"
SCREENSHOT = REPO / "docs" / "report.png"


def chromium() -> str:
    """The Chromium binary: $FEWSHOT_CHROMIUM, else chromium on the PATH; skip visibly when absent."""
    found = os.environ.get("FEWSHOT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no Chromium installed: `.ci/run` installs it with apt-get (apt-get install chromium), "
                    "or set FEWSHOT_CHROMIUM to a Chromium binary")
    return found


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright
    executable = chromium()
    paths = find_results_files([DEMO_RESULTS])
    report = write_report([read_results(path) for path in paths], tmp_path_factory.mktemp("report") / "report.html",
                          sources=[path.name for path in paths], title="fewshot report: demo checkpoint, 100 episodes",
                          written="by tests/fewshot/test_report_browser.py")  # a fixed text: same screenshot each run
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        view = browser.new_page(viewport={"width": 1200, "height": 1500})
        errors: list[str] = []
        view.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        view.on("pageerror", lambda error: errors.append(str(error)))
        view.on("request", lambda request: errors.append(f"network request {request.url}")
                if not request.url.startswith(("file:", "data:")) else None)
        view.goto(report.as_uri())
        view.wait_for_load_state("load")
        yield view, errors
        browser.close()


def test_loads_without_console_errors_or_network(page):
    _, errors = page
    assert errors == []


def test_plots_are_visible_and_decoded(page):
    view, _ = page
    images = view.locator("img")
    assert images.count() == 5  # accuracy plot, one forest plot per shot setting, runtime profiles, volume plot
    for index in range(images.count()):
        image = images.nth(index)
        assert image.is_visible()
        assert image.evaluate("img => img.complete && img.naturalWidth > 300")
        assert image.bounding_box()["width"] > 300


def test_runtime_profiles_are_drawn_for_the_searching_heads(page):
    view, _ = page
    assert view.locator("h2", has_text="Runtime profiles").is_visible()
    runtime = view.locator('img[alt="runtime ECDF and data profile of every searching head"]')
    assert runtime.count() == 1 and runtime.is_visible()
    # both settings drawn: a row of two panels each, so taller than one row at the page's width
    assert runtime.evaluate("img => img.complete && img.naturalWidth > 300 && img.naturalHeight > 0.5 * img.naturalWidth")
    assert "COCO runtime ECDF" in view.locator("figure", has=runtime).inner_text()


def test_tables_are_visible(page):
    view, _ = page
    tables = view.locator("table")
    assert tables.count() >= 6  # leaderboards, comparisons, diagnostics of both settings
    for index in range(tables.count()):
        assert tables.nth(index).is_visible()
    assert view.locator("h2", has_text="Volume lab").is_visible()
    leaderboard = view.locator("#leaderboard table").first
    assert "s / 1,000 episodes" in leaderboard.inner_text() and "prototype" in leaderboard.inner_text()


def test_print_layout_hides_navigation(page):
    view, _ = page
    view.emulate_media(media="print")
    try:
        assert not view.locator("nav").is_visible() and view.locator("#leaderboard table").first.is_visible()
        assert len(view.pdf()) > 10_000  # it prints
    finally:
        view.emulate_media(media="screen")


def test_screenshot_for_the_readme(page):
    view, _ = page
    SCREENSHOT.parent.mkdir(exist_ok=True)
    view.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 20_000
