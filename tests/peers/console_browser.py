"""The operator console in a real browser: headless Chromium from Debian,
driven by Selenium through chromium-driver. Logs in with the keyboard,
walks every page of the navigation by its links, and checks on each: it
rendered (its heading), the browser reported no error (a
Content-Security-Policy violation is one), nothing overflows the window
at 1280x800 and at a phone's 390x844, every control is reachable by the
keyboard; then logs out. A second pass with JavaScript off logs in and
reads the tank list. axe-core (--axe, the npm package's axe.min.js) runs
inside the page on every page: no serious or critical violation.
Screenshots of every page at both sizes go to --shots when given.

Prints one line per check; exits 1 with the reason at the first failure.

    python console_browser.py --url http://127.0.0.1:PORT --user U \
        --password P --sees SITE --not-sees OTHER [--shots DIR]
"""
import argparse
import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

SIZES = {"desktop": (1280, 800), "phone": (390, 844)}


def fail(why):
    print(f"FAIL {why}", flush=True)
    sys.exit(1)


def browser(js=True):
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--disable-gpu", "--window-size=1280,800"):
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not js:
        o.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def errors(d):
    """What the browser logged at SEVERE (a CSP violation is one)."""
    return [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"]


def login(d, url, user, password, path):
    d.get(url + path)
    WebDriverWait(d, 10).until(EC.presence_of_element_located((By.NAME, "password")))
    if "/login" not in d.current_url:
        fail(f"{path} without a session is not the login page: {d.current_url}")
    d.find_element(By.NAME, "user").send_keys(user)
    d.find_element(By.NAME, "password").send_keys(password, Keys.ENTER)
    WebDriverWait(d, 10).until(lambda d: "/login" not in d.current_url)
    if not d.current_url.endswith(path):
        fail(f"after login the browser is at {d.current_url}, not back at {path}")


AXE = None


def accessible(d, name):
    """axe-core run in the page (injected through WebDriver, which the
    page's CSP does not govern): its serious and critical violations."""
    if AXE is None:
        return
    d.execute_script(AXE)
    result = d.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document).then(r => done(r.violations.map(v => "
        "({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.html).slice(0, 3)}))))"
        ".catch(e => done([{id: 'axe failed', impact: 'critical', nodes: [String(e)]}]));")
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    if bad:
        fail(f"{name}: accessibility violations: {bad}")
    print(f"ok {name}: axe, {len(result)} minor findings", flush=True)


def go(d, el):
    """Follows a link or submits a form by clicking `el`, and waits for the
    next page: for this one to go first (its h1 is there until then, and
    an element read from it meanwhile is stale), then for the new h1."""
    old = d.find_element(By.TAG_NAME, "html")
    el.click()
    WebDriverWait(d, 10).until(EC.staleness_of(old))
    WebDriverWait(d, 10).until(EC.presence_of_element_located((By.TAG_NAME, "h1")))


def check_page(d, name, shots):
    h1 = d.find_element(By.TAG_NAME, "h1").text
    if not h1:
        fail(f"{name}: no heading")
    accessible(d, name)
    bad = errors(d)
    if bad:
        fail(f"{name}: the browser reported errors: {bad}")
    for size, (w, h) in SIZES.items():
        d.set_window_size(w, h)
        over = d.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        if over > 0:
            culprits = d.execute_script(
                "const w = document.documentElement.clientWidth;"
                "return [...document.querySelectorAll('body *')]"
                ".filter(e => e.getBoundingClientRect().right > w + 1"
                ")"
                ".slice(-4).map(e => e.outerHTML.slice(0, 160))")
            fail(f"{name} at {size}: the page overflows the window by {over} px: {culprits}")
        if shots:
            d.save_screenshot(os.path.join(shots, f"{name}-{size}.png"))
    d.set_window_size(*SIZES["desktop"])
    # every control reachable by the keyboard: none taken out of the tab order
    unreachable = d.execute_script(
        "return [...document.querySelectorAll('a[href],button,input:not([type=hidden]),select')]"
        ".filter(e => e.tabIndex < 0).map(e => e.outerHTML)")
    if unreachable:
        fail(f"{name}: controls out of the tab order: {unreachable}")
    # the first Tab lands on the skip link
    d.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    first = d.switch_to.active_element.text
    if "Skip to content" not in first:
        fail(f"{name}: the first Tab stop is {first!r}, not the skip link")
    d.execute_script("document.activeElement.blur()")
    print(f"ok {name}: {h1!r}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--sees", required=True)
    ap.add_argument("--not-sees", required=True)
    ap.add_argument("--shots")
    ap.add_argument("--axe", help="axe-core's axe.min.js")
    a = ap.parse_args()
    global AXE
    if a.axe:
        with open(a.axe, encoding="utf-8") as f:
            AXE = f.read()
    if a.shots:
        os.makedirs(a.shots, exist_ok=True)

    d = browser()
    try:
        d.get(a.url + "/login")
        accessible(d, "login")
        login(d, a.url, a.user, a.password, "/tanks")
        body = d.find_element(By.TAG_NAME, "body").text
        if a.sees not in body or a.not_sees in body:
            fail(f"the tank list shows the wrong sites: {body!r}")
        links = [(e.text, e.get_attribute("href"))
                 for e in d.find_elements(By.CSS_SELECTOR, "nav[aria-label=Main] a")]
        if len(links) < 3:
            fail(f"the navigation has {links}")
        for text, _ in links:
            go(d, d.find_element(By.LINK_TEXT, text))
            check_page(d, text.lower(), a.shots)
        # a tank's page, by its link in the list
        go(d, d.find_element(By.LINK_TEXT, "Tanks"))
        go(d, d.find_element(By.CSS_SELECTOR, "tbody a"))
        check_page(d, "tank", a.shots)
        # an escalation worked to resolved with the keyboard-reachable forms
        go(d, d.find_element(By.LINK_TEXT, "Escalations"))
        go(d, d.find_element(By.CSS_SELECTOR, "tbody a"))
        WebDriverWait(d, 10).until(EC.presence_of_element_located((By.ID, "work")))
        for step, note in (("Assign to me", ""), ("Investigating", "calling the site"),
                           ("Resolve", "valve reset")):
            form = d.find_element(By.XPATH, f"//form[.//button[text()='{step}']]")
            if note:
                form.find_element(By.NAME, "note").send_keys(note)
            # the post answers with a redirect to the escalation
            go(d, form.find_element(By.TAG_NAME, "button"))
        facts = d.find_element(By.CSS_SELECTOR, "dl.facts").text
        timeline = d.find_element(By.CSS_SELECTOR, "ol.timeline").text
        if "resolved" not in facts or "valve reset" not in timeline:
            fail(f"the escalation did not end resolved: {facts!r} {timeline!r}")
        if d.find_elements(By.ID, "work"):
            fail("a resolved escalation still offers its forms")
        print("ok escalation worked to resolved", flush=True)
        check_page(d, "escalation", a.shots)
        d.find_element(By.XPATH, "//button[text()='Log out']").click()
        WebDriverWait(d, 10).until(lambda d: "/login" in d.current_url)
        d.get(a.url + "/tanks")
        if "/login" not in d.current_url:
            fail("after logging out the tank list is still shown")
        print("ok logout", flush=True)
    finally:
        d.quit()

    d = browser(js=False)
    try:
        login(d, a.url, a.user, a.password, "/tanks")
        if a.sees not in d.find_element(By.TAG_NAME, "body").text:
            fail("without JavaScript the tank list is empty")
        print("ok without JavaScript", flush=True)
    finally:
        d.quit()
    print("PASS", flush=True)


if __name__ == "__main__":
    main()
