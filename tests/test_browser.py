"""The report and the comparison page in a real browser: headless Chromium, opened from disk.

Driver: selenium with Debian's ``chromium-driver`` (``/usr/bin/chromedriver``), not a hand-written
DevTools-protocol client. Selenium gives real clicks (chromedriver dispatches trusted mouse events
at the element's position, so a click on a covered or hidden element fails as it would for a
person), the browser's console log (``goog:loggingPrefs``: console errors and uncaught exceptions
arrive as SEVERE entries), and ``execute_cdp_cmd`` for the one DevTools call we need: a script that
runs before any page script, recording ``alert``/``confirm``/``prompt`` calls and ``error`` events.
The driver path is given explicitly, so Selenium Manager never tries to download a driver.

Every test skips, with the reason, where selenium, chromium or chromedriver is missing; ``.ci/run``
installs the Debian packages when apt is available.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                                reason="headless Chromium needs the chromium and chromium-driver packages "
                                       "(apt-get install -y chromium chromium-driver); not found on PATH")

HOOK = """
window.__probeAlerts = []; window.__probeErrors = [];
['alert', 'confirm', 'prompt'].forEach(function (name) {
  window[name] = function (m) { window.__probeAlerts.push(name + ':' + String(m)); };
});
window.addEventListener('error', function (e) { window.__probeErrors.push(String(e.message || e.type)); }, true);
window.addEventListener('unhandledrejection', function (e) { window.__probeErrors.push(String(e.reason)); });
"""
PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "{{7*7}}", "$\\zz$"]


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,900", "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def pages(tiny_run, tmp_path_factory):
    """The tiny run's report (a copy) and the comparison page of it against a second copy."""
    import probe
    from probe.comparison import paired_differences
    from probe.report.comparison_page import write_comparison

    root = tmp_path_factory.mktemp("browser")
    a, b = root / "full", root / "again"
    shutil.copytree(tiny_run.path, a, ignore=shutil.ignore_patterns("models", "cache"))
    shutil.copytree(a, b)
    compare_html = write_comparison(probe.compare([a, b], names=["full", "again"]), root / "cmp",
                                    differences=paired_differences([a, b]))
    fixed = _fixed_variant(a, root)
    fixed_html = write_comparison(probe.compare([a, fixed], names=["full", "fixed"]), root / "cmp-fixed")
    return {"report": a / "index.html", "compare": compare_html, "fixed": fixed_html, "root": root}


def _fixed_variant(run: Path, root: Path) -> Path:
    """``run`` marked as relying on its feature, and a copy marked as not, whose config differs by
    counterfactual augmentation: the comparison page's next step must name that copy and setting."""
    import yaml

    fixed = root / "fixed"
    shutil.copytree(run, fixed)
    for path, status in ((run, "relies"), (fixed, "none")):
        summary = json.loads((path / "summary.json").read_text())
        for f in summary["features"]:
            f["verdict_status"] = status
        (path / "summary.json").write_text(json.dumps(summary))
    cfg = yaml.safe_load((fixed / "config.yaml").read_text())
    cfg["finetune"].setdefault("augmentation", {})["counterfactual_rate"] = 0.5
    (fixed / "config.yaml").write_text(yaml.safe_dump(cfg))
    return fixed


def wait_for(driver, script: str, *args, timeout: float = 20.0):
    """Poll ``script`` until it returns something truthy (chromedriver can answer before a page settles)."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.execute_script(script, *args))


def open_page(driver, path: Path) -> None:
    driver.get(path.as_uri())
    wait_for(driver, "return document.readyState === 'complete' && window.__probeErrors !== undefined")


def problems(driver) -> list[str]:
    """Console errors and uncaught exceptions since the last call, and calls of the alert hook."""
    logs = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return logs + driver.execute_script("return window.__probeErrors.concat(window.__probeAlerts)")


@pytest.mark.parametrize("page", ["report", "compare"])
def test_page_loads_without_console_errors(browser, pages, page):
    open_page(browser, pages[page])
    assert problems(browser) == []
    assert browser.find_element("css selector", "nav.toc").is_displayed()
    assert browser.find_element("css selector", "#scorecard").is_displayed()


def test_screenshot_of_the_top_shows_scorecard_and_contents(browser, pages, tmp_path):
    open_page(browser, pages["report"])
    height = browser.execute_script("return window.innerHeight")
    for selector in ("nav.toc", "#table-scorecard"):
        el = browser.find_element("css selector", selector)
        assert el.is_displayed() and el.rect["y"] < height, selector  # in the first screenful
    shot = tmp_path / "report-top.png"
    assert browser.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_contents_link_lands_on_its_section(browser, pages, page):
    open_page(browser, pages[page])
    links = browser.find_elements("css selector", "nav.toc a")
    assert len(links) >= 4
    for link in links:
        target = link.get_attribute("href").split("#", 1)[1]
        link.click()
        wait_for(browser, "return location.hash === arguments[0]", "#" + target)
        where = browser.execute_script(
            "var e = document.getElementById(arguments[0]); if (!e) { return null; }"
            "return [e.getBoundingClientRect().top, window.scrollY + window.innerHeight, "
            "document.documentElement.scrollHeight, location.hash];", target)
        assert where is not None, f"contents link #{target} has no element"
        top, bottom, page_height, hash_ = where
        assert hash_ == "#" + target
        assert -2 <= top <= 60 or bottom >= page_height - 2, f"#{target} not scrolled into view (top {top})"
    assert problems(browser) == []


def test_collapsed_table_opens_and_sorts_by_click(browser, pages):
    open_page(browser, pages["report"])
    table = browser.find_element("id", "table-probing")
    assert not table.is_displayed()  # long tables start collapsed
    browser.find_element("css selector", 'details[data-table="table-probing"] > summary').click()
    assert table.is_displayed()
    heads = table.find_elements("css selector", "thead th")
    col = next(i for i, th in enumerate(heads) if th.text.startswith("value"))

    def column():
        return browser.execute_script(
            "var t = arguments[0], c = arguments[1]; return Array.prototype.map.call(t.tBodies[0].rows,"
            " function (r) { return parseFloat(r.cells[c].getAttribute('data-sort')); });", table, col)

    before = column()
    assert len(set(before)) > 3
    heads[col].click()
    assert column() == sorted(before) and heads[col].get_attribute("aria-sort") == "ascending"
    heads[col].click()
    assert column() == sorted(before, reverse=True)
    assert problems(browser) == []


def test_config_is_collapsed_until_clicked(browser, pages):
    open_page(browser, pages["report"])
    pre = browser.find_element("css selector", 'details[data-table="config"] pre')
    assert not pre.is_displayed()
    browser.find_element("css selector", 'details[data-table="config"] > summary').click()
    assert pre.is_displayed()


def test_print_keeps_collapsed_tables_collapsed_and_names_their_csv(browser, pages):
    open_page(browser, pages["report"])
    closed = browser.execute_script("return document.querySelectorAll('details:not([open])').length")
    assert closed >= 2
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert not browser.find_element("css selector", "nav.toc").is_displayed()
        browser.execute_script("window.dispatchEvent(new Event('beforeprint'))")
        assert browser.execute_script("return document.querySelectorAll('details:not([open])').length") == closed
        notes = [e.text for e in browser.find_elements("css selector", ".printonly") if e.is_displayed()]
        assert any("tables/probing.csv" in t for t in notes)
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
    assert problems(browser) == []


def pdf_pages(driver) -> int:
    """Pages of the open page printed to PDF (A4-ish default paper, backgrounds on)."""
    import base64
    import re

    data = base64.b64decode(driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})["data"])
    return len(re.findall(rb"/Type\s*/Page[^s]", data))


def test_printed_report_is_short(browser, pages):
    open_page(browser, pages["report"])
    assert 1 <= pdf_pages(browser) <= 25


@pytest.mark.parametrize("page", ["report", "compare"])
def test_impact_banner_with_next_step_in_the_first_900_px(browser, pages, page):
    open_page(browser, pages[page])
    banner = browser.find_element("css selector", "#impact .banner")
    assert banner.is_displayed() and banner.rect["y"] + banner.rect["height"] <= 900
    assert banner.find_element("css selector", ".verdict-line").text.strip()
    if page == "report":
        cmd = browser.find_element("css selector", "#next-step")
        assert cmd.text.startswith("probe run ") and cmd.rect["y"] + cmd.rect["height"] <= 900


def test_comparison_next_step_names_the_variant_that_removed_the_shortcut(browser, pages):
    open_page(browser, pages["fixed"])
    cmd = browser.find_element("css selector", "#next-step")
    assert "counterfactual_rate=0.5" in cmd.text and cmd.rect["y"] + cmd.rect["height"] <= 900
    panel = browser.find_element("id", "table-panel")
    assert "fixed" in panel.text and "baseline" in panel.text


def test_task_quality_has_per_class_scores_and_confusion_matrices(browser, pages):
    open_page(browser, pages["report"])
    assert browser.find_element("id", "table-per-class").is_displayed()
    heads = [th.text for th in browser.find_elements("css selector", "#table-per-class thead th")]
    assert {"precision", "recall", "F1", "support"} <= set(heads)
    assert browser.find_element("id", "table-confusion-0").is_displayed()
    alts = [i.get_attribute("alt") for i in browser.find_elements("css selector", "#task-quality img")]
    assert any(a.startswith("Confusion matrices") for a in alts)


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_figure_has_a_takeaway_and_its_own_alt_text(browser, pages, page):
    open_page(browser, pages[page])
    figs = browser.find_elements("css selector", "figure")
    assert figs and len(figs) == len(browser.find_elements("tag name", "img"))
    alts = []
    for f in figs:
        alts.append(f.find_element("tag name", "img").get_attribute("alt").strip())
        assert len(f.find_element("css selector", "figcaption.takeaway").text.strip()) > 20
    assert all(alts) and len(set(alts)) == len(alts), alts


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_tooltip_term_has_a_glossary_entry(browser, pages, page):
    open_page(browser, pages[page])
    terms = browser.execute_script(
        "return Array.prototype.map.call(document.querySelectorAll('main abbr[title]'), function (a) {"
        " return a.textContent.trim().toLowerCase(); })")
    entries = {e.text.strip().lower() for e in browser.find_elements("css selector", "#glossary dt")}
    missing = sorted({t for t in terms if t} - entries)
    assert terms and not missing, missing


@pytest.mark.parametrize("page", ["report", "compare"])
def test_every_sortable_header_works_from_the_keyboard(browser, pages, page):
    from selenium.webdriver.common.keys import Keys

    open_page(browser, pages[page])
    heads = browser.find_elements("css selector", "table.sortable thead th")
    assert heads
    mouse_only = browser.execute_script(
        "return Array.prototype.filter.call(document.querySelectorAll('table.sortable thead th'), function (th) {"
        " var b = th.querySelector('button'); return !b || b.tabIndex < 0; }).length")
    assert mouse_only == 0
    th = browser.find_element("css selector", "#table-scorecard thead th")
    button = th.find_element("tag name", "button")
    browser.execute_script("arguments[0].focus()", button)
    assert browser.switch_to.active_element == button
    button.send_keys(Keys.ENTER)
    assert th.get_attribute("aria-sort") == "ascending"
    button.send_keys(Keys.SPACE)
    assert th.get_attribute("aria-sort") == "descending"


CONTRAST = """
function lum(c) { var m = c.match(/[\\d.]+/g).slice(0, 3).map(Number).map(function (v) { v /= 255;
  return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); });
  return 0.2126 * m[0] + 0.7152 * m[1] + 0.0722 * m[2]; }
return Array.prototype.map.call(document.querySelectorAll('.chip'), function (e) {
  var s = getComputedStyle(e), bg = s.backgroundColor;
  if (/rgba\\(.*,\\s*0\\)$/.test(bg) || bg === 'transparent') { bg = 'rgb(255, 255, 255)'; }
  var a = lum(s.color), b = lum(bg);
  return [e.className, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05), parseFloat(s.fontSize)]; });
"""


@pytest.mark.parametrize("page", ["report", "compare"])
def test_chips_have_at_least_aa_contrast(browser, pages, page):
    open_page(browser, pages[page])
    chips = browser.execute_script(CONTRAST)
    assert chips
    low = [(c, round(r, 2)) for c, r, _ in chips if r < 4.5]
    assert not low, low
    assert min(size for _, _, size in chips) >= 11


def _poison(value, swaps: dict[str, str]):
    """``value`` with every string's ``swaps`` applied, through dicts and lists."""
    if isinstance(value, str):
        for old, new in swaps.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_poison(v, swaps) for v in value]
    if isinstance(value, dict):
        return {k: _poison(v, swaps) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def evil_pages(pages):
    """The tiny run with markup and script payloads in every name the page prints: feature, class and
    property names, heatmap words, warnings, discovered shortcuts; re-rendered, and compared."""
    import probe
    from probe.report.comparison_page import write_comparison
    from probe.report.render import render_report

    run = pages["root"] / "evil"
    shutil.copytree(pages["report"].parent, run)
    swaps = {"zebra": "zebra" + PAYLOADS[0], "business": "business" + PAYLOADS[1],
             "length_bucket": "length" + PAYLOADS[2], "casing_ratio_bucket": "casing" + PAYLOADS[3]}
    for csv in (run / "tables").glob("*.csv"):
        df = pd.read_csv(csv, keep_default_na=False, dtype=str)
        df = df.apply(lambda c: c.map(lambda v: _poison(v, swaps)))
        if "word" in df:
            df["word"] = [PAYLOADS[i % 4] if i % 3 == 0 else w for i, w in enumerate(df["word"])]
        df.to_csv(csv, index=False)
    summary = _poison(json.loads((run / "summary.json").read_text()), swaps)
    summary["name"] = "evil" + PAYLOADS[1]
    summary["warnings"] = list(PAYLOADS)
    summary["discovered"] = [{"feature": p, "kind": "word", "class": PAYLOADS[0], "verdict": "used shortcut",
                              "override_rate": 0.4, "override_ci_low": 0.3, "override_ci_high": 0.5,
                              "deletion_drop": 0.1, "deletion_ci_low": 0.0, "deletion_ci_high": 0.2,
                              "q_value": 0.01, "count": 12, "z": 5.0} for p in PAYLOADS]
    (run / "summary.json").write_text(json.dumps(summary))
    report = render_report(run)
    compare_html = write_comparison(probe.compare([pages["report"].parent, run], names=["full", PAYLOADS[0]]),
                                    pages["root"] / "evil-cmp")
    return {"report": report, "compare": compare_html}


@pytest.mark.parametrize("page", ["report", "compare"])
def test_markup_and_script_payloads_execute_nothing(browser, evil_pages, page):
    open_page(browser, evil_pages[page])
    assert browser.execute_script("return window.__probeAlerts") == []
    assert problems(browser) == []
    assert browser.execute_script("return document.scripts.length") == 1  # the page's own script only
    assert browser.execute_script("return document.querySelectorAll('[onerror]').length") == 0
    srcs = browser.execute_script("return Array.prototype.map.call(document.images, function (i) { return i.src; })")
    assert all(s.startswith("data:image/svg+xml;base64,") for s in srcs)
    text = browser.execute_script("return document.body.textContent")
    assert PAYLOADS[0] in text and (page == "compare" or all(p in text for p in PAYLOADS))
