"""4. Cold start: `streamlit run app.py` to the first successful HTTP response, and to the home
page rendered in the browser suite's harness (Debian chromium through Playwright)."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def once(browser) -> tuple[float, float | None]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
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
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        http = time.perf_counter() - t0
        rendered = None
        if browser is not None:
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_text("the learning-rate & batch-size lab").first.wait_for(timeout=120_000)
            rendered = time.perf_counter() - t0
            page.close()
        return http, rendered
    finally:
        proc.terminate()
        proc.wait(10)


def run(repeats: int = 3) -> list[dict]:
    browser, pw = None, None
    try:
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
    except Exception as exc:  # no browser here: HTTP timing only
        print(f"cold start: no browser ({exc}); HTTP only", file=sys.stderr)
    results = [once(browser) for _ in range(repeats)]
    if browser is not None:
        browser.close()
        pw.stop()
    http = statistics.median(r[0] for r in results)
    rendered = [r[1] for r in results if r[1] is not None]
    return [
        {
            "repeats": repeats,
            "first_http_s": http,
            "first_render_s": statistics.median(rendered) if rendered else None,
        }
    ]


if __name__ == "__main__":
    print(run())
