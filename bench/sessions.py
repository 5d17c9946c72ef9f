"""7. Many sessions, one server: N browser tabs (each its own session) start the default range
test at the same moment on a freshly started app; the time until the last tab shows its
result, against one session's time. Training runs in the server's worker processes, so the
goal is that every session finishes, with the last one within 1.5 x N x (one session's
time) / cores."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def serve(db: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
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
        env=dict(os.environ, LRBS_DB=str(db)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
            return proc, url
        except OSError:
            time.sleep(0.25)
    proc.kill()
    raise RuntimeError("the app did not come up")


def sessions(browser, n: int, timeout: float = 600) -> float:
    """Seconds from N simultaneous clicks to the last result, on a fresh server."""
    with tempfile.TemporaryDirectory() as tmp:
        server, url = serve(Path(tmp) / "runs.db")
        contexts = []
        try:
            pages = []
            for _ in range(n):
                ctx = browser.new_context(viewport={"width": 1200, "height": 900})
                contexts.append(ctx)
                pg = ctx.new_page()
                pg.set_default_timeout(timeout * 1000)
                pg.goto(f"{url}/lr")
                pg.get_by_role("button", name="Run range test").wait_for()
                pages.append(pg)
            t0 = time.perf_counter()
            for pg in pages:
                pg.get_by_role("button", name="Run range test").click()
            for pg in pages:
                pg.get_by_text("Suggestions").wait_for()
            return time.perf_counter() - t0
        finally:
            for ctx in contexts:
                ctx.close()
            server.terminate()
            server.wait(10)


def run(ns: tuple[int, ...] = (1, 4, 8, 16)) -> list[dict]:
    from playwright.sync_api import sync_playwright

    cores = len(os.sched_getaffinity(0))
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            times = {n: sessions(browser, n) for n in ns}
        finally:
            browser.close()
    one = times[min(ns)]
    return [
        {
            "sessions": n,
            "last_result_s": t,
            "vs_one": t / one,
            "goal_s": 1.5 * n * one / cores,
            "met": t <= 1.5 * n * one / cores or n == 1,
        }
        for n, t in times.items()
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
