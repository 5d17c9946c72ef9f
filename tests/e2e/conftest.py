"""The real app in a real browser: `streamlit run app.py` on a free localhost port, driven by
Playwright's Python package through Debian's chromium (never a downloaded browser)."""

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_helpers import CHROMIUM, ROOT, SHOTS  # noqa: E402


def _why_not() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return f"chromium not found at {CHROMIUM}: `apt-get install -y chromium` to run these"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


REASON = _why_not()
if REASON:
    warnings.warn(f"BROWSER TESTS SKIPPED: {REASON}", stacklevel=1)
    print(f"\n*** BROWSER TESTS SKIPPED: {REASON} ***\n", file=sys.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(env: dict | None = None, log=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free localhost port, once it answers its health check."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # noqa: E501
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the app exited before it answered") from None
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the app did not come up")


@pytest.fixture(scope="session")
def app_url():
    if REASON:
        pytest.skip(REASON)
    log = open(Path(tempfile.gettempdir()) / "lrbs-e2e-server.log", "w")
    proc, url = serve(log=log)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        SHOTS.mkdir(parents=True, exist_ok=True)
        print(f"\nscreenshots: {SHOTS}", file=sys.stderr)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1100}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    yield pg
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, keep a screenshot of what the browser showed."""
    outcome = yield
    report = outcome.get_result()
    pg = item.funcargs.get("page") if hasattr(item, "funcargs") else None
    if report.when == "call" and report.failed and pg is not None:
        try:
            SHOTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(SHOTS / f"FAILED-{item.name}.png"), full_page=True)
        except Exception:
            pass
