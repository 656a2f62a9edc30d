"""Shared test fixtures.

hc18_root     Path to ../shared/data/hc18 (real HC18 pairs), or a skip with the reason when absent.
app_url       URL of ONE running dashboard for the whole session: `python app.py` on a free port with a
              temporary --work-dir and --data-root ../shared/data (started once, stopped at the end).
app_work_dir  that dashboard's work dir (runs/, loras/, synthetic/, uploads/ appear here).
wait_text     wait_text(page, selector, text, timeout_s): wait for a text, fail fast on an error toast and
              say what the page and the dashboard's log showed.
wait_js       wait_js(page, condition_js, what, timeout_s, arg, show): the same for any JavaScript predicate.
set_input     set_input(page, selector, value): type into an input and make sure the value stays (see set_input).
page          a fresh Playwright Page (Debian chromium, one browser per session, one context per test);
              an uncaught JavaScript error on the page fails the test.
Browser tests live in tests/browser/test_<tab>.py and are marked @pytest.mark.browser.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
CHROMIUM = os.environ.get("SONOSYNTH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
APP_START_TIMEOUT_S = float(os.environ.get("SONOSYNTH_APP_START_TIMEOUT", 180))
APP_LOG: Path | None = None  # the session dashboard's log (set by app_url)


def app_log_tail(n: int = 6000) -> str:
    try:
        return APP_LOG.read_text(errors="replace")[-n:] if APP_LOG else "(no app started)"
    except OSError:
        return "(no log)"


def wait_until(page, condition_js: str, what: str, timeout_s: float = 60, arg=None, show: str | None = None) -> None:
    """Wait until the JavaScript predicate `condition_js` (a function of `arg`) is true. Fails at once when the
    page shows an error toast, and on time-out says what `show` (a selector) and the page's toasts showed,
    with the dashboard's log tail — so a CI failure explains itself."""
    from playwright.sync_api import TimeoutError as PwTimeout
    js = """([cond, arg]) => {
        if ((0, eval)(cond)(arg)) return 'ok';
        const err = [...document.querySelectorAll('.toast-body')].filter(t => /error/i.test(t.className + t.innerText));
        return err.length ? 'toast: ' + err.map(t => t.innerText.replace(/\\s+/g, ' ')).join(' | ') : false;
    }"""

    def shown() -> str:
        if not show:
            return ""
        return f"\n{show} shows {page.evaluate('(s) => document.querySelector(s)?.innerText ?? null', show)!r}"
    try:
        got = page.wait_for_function(js, arg=[condition_js, arg], timeout=timeout_s * 1000).json_value()
    except PwTimeout:
        pytest.fail(f"{what}: not within {timeout_s:.0f} s{shown()}\n--- dashboard log tail ---\n{app_log_tail()}")
    if got != "ok":
        pytest.fail(f"{what}: an error toast appeared instead: {got}{shown()}\n"
                    f"--- dashboard log tail ---\n{app_log_tail()}")


def wait_for_toast(page, text: str, timeout_s: float = 30) -> None:
    """A Gradio toast (gr.Info / gr.Warning / gr.Error) whose text holds `text`."""
    page.wait_for_function("(t) => [...document.querySelectorAll('.toast-body')].some(e => e.innerText.includes(t))",
                           arg=text, timeout=timeout_s * 1000)


def close_toasts(page) -> None:
    """Close every toast (so the next one asserted is a new one)."""
    for close in page.locator(".toast-close").all():
        close.click()
    page.wait_for_function("() => document.querySelectorAll('.toast-body').length == 0")


def wait_for_text(page, selector: str, text: str, timeout_s: float = 60) -> None:
    """Wait until `selector`'s text contains `text` (see wait_until)."""
    wait_until(page, "([s, t]) => (document.querySelector(s)?.innerText ?? '').includes(t)",
               f"{selector} showing {text!r}", timeout_s, arg=[selector, text], show=selector)


def set_input(page, selector: str, value, commit: str = "Tab", timeout_s: float = 30) -> None:
    """Type `value` into the input/textarea `selector`, commit it (Tab or Enter) and check it is still there a
    moment later; retry otherwise. Why: Gradio 6 re-renders a tab's or accordion's children shortly after it is
    opened (`render_previously_invisible_children`), and on a slow machine that re-render can land after the
    typing and put back the default (seen in CI: lora-n read '20' right after typing '2')."""
    want = str(value)
    box = page.locator(selector).first
    deadline = time.monotonic() + timeout_s
    for attempt in range(1, 1000):
        box.fill(want)
        box.press(commit)
        page.wait_for_timeout(400)
        if box.input_value() == want:
            page.wait_for_timeout(600)
            if box.input_value() == want:
                if attempt > 1:  # visible in pytest's warnings summary: tells whether the re-render race happened
                    warnings.warn(f"set_input {selector}: the typed value held only at attempt {attempt}")
                return
        if time.monotonic() > deadline:
            pytest.fail(f"{selector}: typed {want!r} but it reads {box.input_value()!r} after {timeout_s:.0f} s")


def click_until(page, selector: str, condition_js: str, what: str, timeout_s: float = 180, arg=None,
                retry_s: float = 20, show: str | None = None) -> None:
    """Click `selector`, then wait for `condition_js` (see wait_until); click again every `retry_s` seconds
    until `timeout_s`. Why: a click on a just-opened tab's button can land on the element Gradio 6 replaces a
    tick later and be lost (CI, 2026-12-07: the Playground's first *Load image* was never answered in 180 s,
    while a second test that typed first, so after the re-render, loaded at once). Only for idempotent
    buttons: a retry must do no harm."""
    from playwright.sync_api import TimeoutError as PwTimeout
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while True:
        attempt += 1
        page.locator(selector).first.click()
        wait_s = min(retry_s, max(1.0, deadline - time.monotonic()))
        try:
            page.wait_for_function(condition_js, arg=arg, timeout=wait_s * 1000)
        except PwTimeout:
            if time.monotonic() >= deadline:
                wait_until(page, condition_js, f"{what} (after {attempt} clicks on {selector})", 1, arg=arg,
                           show=show)
                return
            continue
        if attempt > 1:
            warnings.warn(f"click_until {selector}: answered only after click {attempt}")
        return


@pytest.fixture(name="set_input")
def _set_input_fixture():
    """set_input(page, selector, value, commit='Tab'): see set_input."""
    return set_input


@pytest.fixture(scope="session")
def hc18_root() -> Path:
    root = SHARED_DATA / "hc18"
    if not (root / "training_set").is_dir():
        pytest.skip(f"real HC18 data not found at {root} (tests that need it run where ../shared/data exists)")
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_work_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("app-work")


@pytest.fixture(scope="session")
def app_url(app_work_dir, tmp_path_factory):
    """Start `python app.py` once per test session and wait until it answers HTTP."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("app-log") / "app.log"
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               SONOSYNTH_PROFILE=os.environ.get("SONOSYNTH_PROFILE", "tiny"),
               GRADIO_TEMP_DIR=str(tmp_path_factory.mktemp("gradio-tmp")))  # not the machine-wide /tmp/gradio
    cmd = [sys.executable, "app.py", "--port", str(port), "--work-dir", str(app_work_dir),
           "--data-root", str(SHARED_DATA)]
    global APP_LOG
    APP_LOG = log_path
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/"

    def log_tail() -> str:
        try:
            return log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    deadline = time.monotonic() + APP_START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the dashboard exited with code {proc.returncode} before it was ready:\n{log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer on {url} within {APP_START_TIMEOUT_S:.0f} s:\n{log_tail()}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


@pytest.fixture
def wait_text():
    """wait_text(page, selector, text, timeout_s=60): see wait_for_text."""
    return wait_for_text


@pytest.fixture(name="click_until")
def _click_until_fixture():
    """click_until(page, selector, condition_js, what, timeout_s=180, arg=None, retry_s=20, show=None)."""
    return click_until


@pytest.fixture
def wait_js():
    """wait_js(page, condition_js, what, timeout_s=60, arg=None, show=None): see wait_until."""
    return wait_until


@pytest.fixture(scope="session")
def _browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # required in CI: fail loudly rather than skip
        pytest.fail("playwright is not installed: pip install -r requirements-test.txt")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"chromium not found at {CHROMIUM}: apt-get install chromium (never `playwright install`)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(_browser, app_url):
    """A fresh page in its own browser context (own cookies = own Gradio session)."""
    context = _browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    if errors:
        pytest.fail("uncaught JavaScript error(s) on the page:\n" + "\n".join(errors))


@pytest.fixture(scope="module")
def random_base(tmp_path_factory):
    """A random-weight, test-size (32²) diffusion base saved in the diffusers layout (plumbing tests only)."""
    from pipeline.diffusion.base import assemble_pipeline, build_tiny_components
    d = tmp_path_factory.mktemp("random-base") / "base"
    assemble_pipeline(build_tiny_components(seed=0, size="test")).save_pretrained(str(d), safe_serialization=True)
    return d
