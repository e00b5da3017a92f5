"""An operator's tasks in the console, in headless Chromium (Debian's,
driven by Selenium through chromium-driver), against a headend whose
simulated site streams through a real agent:

1. the site's page: its assets and a trend chart drawn from readings;
2. a site-level setpoint: the form, the split preview (which controller
   gets what), Send, then the command's page following it live (the
   page's script) until it is active with each share read back;
3. a loads CSV with a bad row: the upload report names that row;
4. enrolling a new site: the installer's command and its copy button;
5. the administration page.

Each page passes the same checks as console_browser.py (no browser error,
no overflow at 1280x800 or 390x844, keyboard reachable, axe-core).

    python console_operate.py --url http://127.0.0.1:PORT --user U \
        --password P --site SITE --shares ctl-1=60,ctl-2=30 --total 90 \
        [--shots DIR] [--axe axe.min.js]
"""
import argparse
import os
import sys
import tempfile
import time

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import console_browser as cb  # noqa: E402

fail = cb.fail


def wait_for(d, css, seconds=15):
    return WebDriverWait(d, seconds).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, css)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--site", required=True)
    ap.add_argument("--total", required=True)
    ap.add_argument("--shares", required=True, help="asset=value,...")
    ap.add_argument("--shots")
    ap.add_argument("--axe")
    a = ap.parse_args()
    if a.axe:
        with open(a.axe, encoding="utf-8") as f:
            cb.AXE = f.read()
    if a.shots:
        os.makedirs(a.shots, exist_ok=True)
    shares = dict(s.split("=") for s in a.shares.split(","))

    d = cb.browser()
    try:
        cb.login(d, a.url, a.user, a.password, f"/sites/{a.site}?range=24h")
        # 1. the site: assets and a chart with a line drawn from readings
        wait_for(d, "svg.chart")
        # drawn, not just present: the line a child of the svg (an unclosed
        # element before it would swallow it) across most of the width
        drawn = d.execute_script(
            "const s = document.querySelector('svg.chart');"
            "const l = s.querySelector(':scope > path.line');"
            "return [l ? l.getBoundingClientRect().width : 0, s.getBoundingClientRect().width,"
            " s.querySelectorAll(':scope > text').length];")
        if drawn[0] < drawn[1] / 2 or drawn[2] < 4:
            fail(f"the site's trend is not drawn (line {drawn[0]} of {drawn[1]} px, {drawn[2]} labels)")
        if "tank-1" not in d.find_element(By.ID, "assets-h").find_element(By.XPATH, "..").text:
            fail("the site's assets do not list tank-1")
        # the assets table sorts by a column with the page's script
        assets = d.find_element(By.ID, "assets-h").find_element(By.XPATH, "..")
        head = assets.find_element(By.XPATH, ".//th[.//button[text()='Field']]")
        head.find_element(By.TAG_NAME, "button").click()

        def column():
            return d.execute_script(
                "return [...arguments[0].querySelectorAll('tbody tr')]"
                ".map(r => r.cells[1] ? r.cells[1].innerText.trim() : '')", assets)
        up = column()
        if up != sorted(up) or head.get_attribute("aria-sort") != "ascending":
            fail(f"sorting by field ascending gave {up}")
        head.find_element(By.TAG_NAME, "button").click()
        down = column()
        if down != sorted(up, reverse=True) or head.get_attribute("aria-sort") != "descending":
            fail(f"sorting by field descending gave {down}")
        print(f"ok sorted by field: {up[:3]}…", flush=True)
        d.refresh()  # the page as it loads, for its checks and screenshots
        wait_for(d, "svg.chart")
        cb.check_page(d, "site", a.shots)

        # 2. a site setpoint: preview, send, follow it live to active
        d.find_element(By.LINK_TEXT, "Send a setpoint").click()
        wait_for(d, "form.setpoint")
        Select(d.find_element(By.ID, "asset")).select_by_value("")
        Select(d.find_element(By.ID, "field")).select_by_value("power_limit")
        d.find_element(By.ID, "value").send_keys(a.total)
        d.find_element(By.CSS_SELECTOR, "button[value=preview]").click()
        preview = wait_for(d, "#preview").text
        for asset, value in shares.items():
            row = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#preview tbody tr")
                   if r.text.startswith(asset)]
            if not row or f" {value} " not in f" {row[0]} ":
                fail(f"the split preview does not give {asset} {value}: {preview!r}")
        print(f"ok split preview: {preview!r}", flush=True)
        cb.check_page(d, "setpoint", a.shots)
        d.find_element(By.CSS_SELECTOR, "button[value=send]").click()
        WebDriverWait(d, 10).until(
            lambda d: "/commands/" in d.current_url and not d.current_url.endswith("/new"))
        # the page follows the command by itself (its script swaps #live
        # each second) until every share is active and read back
        deadline = time.time() + 60
        while True:
            rows, text = d.execute_script(
                "const l = document.getElementById('live');"
                "return [[...l.querySelectorAll('tbody tr')].map("
                "r => [...r.cells].map(c => c.innerText.trim())), l.innerText];")
            by_asset = {r[0]: r for r in rows if r}
            held = [a for a, v in shares.items()
                    if a in by_asset and by_asset[a][2] == "active"
                    and by_asset[a][4] in (v, v + ".0")]
            if len(held) == len(shares):
                break
            if time.time() > deadline:
                fail(f"the shares were not active and read back within 60 s: {rows!r}")
            time.sleep(0.5)
        print(f"ok setpoint followed live to: {rows!r}", flush=True)
        cb.check_page(d, "command", a.shots)

        # 3. a loads CSV with a bad row: the row named
        d.find_element(By.LINK_TEXT, "Loads").click()
        wait_for(d, "input[type=file]")
        eta = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3 * 86400))
        csv = ("reference,tanks,planned_volume_l,eta,eta_source,carrier\n"
               f"PO-100,tank-1,9000,{eta},csv,Hauler\n"
               f"PO-101,tank-9,9000,{eta},csv,Hauler\n")
        with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
            f.write(csv)
        Select(d.find_element(By.ID, "up-site")).select_by_value(a.site)
        d.find_element(By.ID, "file").send_keys(f.name)
        d.find_element(By.XPATH, "//button[text()='Upload']").click()
        wait_for(d, "#report")
        bad = d.find_elements(By.CSS_SELECTOR, "#report tr.rejected")
        if len(bad) != 1 or "PO-101" not in bad[0].text or "tank-9" not in bad[0].text:
            fail(f"the report does not name the bad row: {[b.text for b in bad]!r}")
        print(f"ok upload report: {bad[0].text!r}", flush=True)
        if "PO-100" not in d.find_element(By.CSS_SELECTOR, "main table").text:
            fail("the good row's load is not listed")
        cb.check_page(d, "upload", a.shots)

        # 4. enroll a new site: the installer's command, copyable
        d.get(a.url + "/admin/enroll")
        d.find_element(By.ID, "site").send_keys("new-site-7")
        d.find_element(By.XPATH, "//button[text()='Make a token']").click()
        cmd = wait_for(d, "pre#command").text
        if not cmd.startswith("edge-agent enroll") or "--token twe_" not in cmd:
            fail(f"the enrollment command is {cmd!r}")
        copy = d.find_element(By.CSS_SELECTOR, "button[data-copy=command]")
        if not copy.is_displayed():
            fail("the copy button is not shown (the page's script did not run)")
        print(f"ok enrollment command: {cmd!r}", flush=True)
        cb.check_page(d, "enroll", a.shots)

        # 5. administration
        d.find_element(By.LINK_TEXT, "Admin").click()
        wait_for(d, "#users-h")
        cb.check_page(d, "admin", a.shots)
    finally:
        d.quit()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
