"""Click through the browser in a real Chromium (Debian's, driven by Playwright).

Skipped only when Playwright or a Chromium binary is missing (CI installs both). Every page
visited must show no error text and log no JavaScript error; screenshots go to the test's
temporary folder.
"""

import os
import shutil

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the browser "
                                                              "itself comes from apt: chromium)")


def chromium_path() -> str | None:
    for name in (os.environ.get("BAGOFDIMS_CHROMIUM"), "chromium", "chromium-browser",
                 "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium found: apt-get install chromium (or set BAGOFDIMS_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A 1280x800 page that records console errors and uncaught exceptions."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.errors = []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


def check(pg, shots, name: str) -> None:
    """No error box, no traceback, no JS error; then a screenshot."""
    pg.screenshot(path=str(shots / f"{name}.png"), full_page=False)
    assert pg.locator(".error").count() == 0, pg.locator(".error").all_inner_texts()
    body = pg.inner_text("body")
    assert "Traceback" not in body and "Internal Server Error" not in body
    assert pg.errors == [], pg.errors


def test_click_through_index_feature_dim_reader_steer_sweep(live, page, tmp_path):
    server, _, _ = live
    pg = page
    pg.goto(server.url + "/")
    assert pg.locator("#features tbody tr").count() == 9
    pg.fill("#q", "mid")
    assert pg.locator("#features tbody tr:visible").count() == 3
    assert "3 of 9 shown" in pg.inner_text("#shown")
    pg.click("th button[data-key=auc]")  # sort by held-out AUC, keyboard-reachable button
    assert pg.get_attribute("th button[data-key=auc]", "aria-sort") == "descending"
    check(pg, tmp_path, "index")

    pg.click("#features tbody tr:visible a >> nth=0")
    pg.wait_for_url("**/feature/*")
    assert pg.inner_text("h1").startswith("mid")
    for heading in ("Dims and signs", "Evidence", "Top tokens by sign agreement",
                    "Held-out members", "Nearest features", "Top activating contexts"):
        assert pg.get_by_role("heading", name=heading).is_visible()
    assert pg.locator("svg.chart").is_visible()
    assert pg.locator(".contexts mark").count() >= 1
    check(pg, tmp_path, "feature")

    pg.click(".strip li a >> nth=0")
    pg.wait_for_url("**/dim/**")
    assert pg.inner_text("h1").startswith("Dim ")
    assert "mid wants" in pg.inner_text("main")
    assert pg.locator("ol.tokens li").count() > 0
    check(pg, tmp_path, "dim")

    pg.click("nav >> text=Reader")
    pg.fill("#text", "w5 w40 w70 w12")
    pg.click("button:text('Read')")
    pg.wait_for_selector("table")
    assert pg.locator("table tbody tr").count() == 4
    check(pg, tmp_path, "reader")

    pg.click("nav >> text=Steer")
    pg.fill("#feature", "low")
    pg.fill("#prompt", "w5 w6 w7")
    pg.fill("#strength", "2")
    pg.fill("#tokens", "8")
    pg.select_option("#control", "disjoint")
    pg.click("button:text('Generate')")
    pg.wait_for_function("document.getElementById('steer-status').textContent.startsWith('Done')",
                         timeout=60000)
    for side in ("baseline", "steered", "control"):
        assert pg.inner_text(f"#mass-{side}") != "…"
        assert pg.inner_text(f"#ppl-{side}") != "…"
    assert pg.inner_text("#prompt-used") == "w5 w6 w7"
    check(pg, tmp_path, "steer")

    # the same settings, swept over strengths: a table and a chart, rows streamed in
    pg.fill("#strengths", "0.5, 2, 8")
    pg.click("button[value=sweep]")
    pg.wait_for_function("document.getElementById('sweep-status').textContent.startsWith('Done')",
                         timeout=60000)
    assert pg.locator("#sweep-table").is_visible()
    rows = pg.locator("#sweep-table tbody tr")
    assert rows.count() == 4  # the baseline and three strengths
    assert rows.nth(0).inner_text().startswith("baseline")
    assert [rows.nth(i).locator("td").nth(0).inner_text() for i in (1, 2, 3)] == ["0.5", "2", "8"]
    assert pg.locator("#sweep-chart svg.chart").is_visible()
    verdict = pg.inner_text("#sweep-verdict")
    assert verdict.startswith(("Text degrades from strength", "No degradation up to strength 8"))
    check(pg, tmp_path, "sweep")


def test_bad_steering_input_shows_a_message(live, page, tmp_path):
    server, _, _ = live
    page.goto(server.url + "/steer?feature=low&strength=-3")
    assert "Strength must be" in page.inner_text(".error")
    assert page.locator("#steer-out").count() == 0


def test_static_export_opens_from_disk(built, page, tmp_path):
    from bagofdims.cli.main import main

    _, catalog = built
    out = tmp_path / "site"
    assert main(["export-html", str(catalog), str(out)]) == 0
    page.goto((out / "index.html").as_uri())
    page.click("#features tbody tr a >> nth=0")
    assert "Dims and signs" in page.inner_text("main")
    page.click(".strip li a >> nth=0")
    assert "Features using this dim" in page.inner_text("main")
    page.click("nav >> text=Steer")
    assert "needs the live server" in page.inner_text("main")
    check(page, tmp_path, "export-steer")
