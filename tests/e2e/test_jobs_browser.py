"""Jobs outside the web process, in a real browser: a reload mid-run shows the same run with
the same settings, a second tab stops it, a sidebar error keeps the page's settings, a killed
worker's job is shown as interrupted with its points, and eight tabs at once all finish."""

import os
import signal
import subprocess
import time

from browser_helpers import no_exception, open_page, progress_count, settle, sidebar_number
from conftest import serve

from lrbs.runs.store import RunStore


def sidebar_value(page, label: str) -> str:
    return page.locator('[data-testid="stSidebar"]').get_by_label(label, exact=True).input_value()


def wait_progress(page, at_least: int = 1, timeout: float = 90) -> int:
    end = time.time() + timeout
    while time.time() < end:
        n = progress_count(page, r"(\d+) iterations so far")
        if n is not None and n >= at_least:
            return n
        time.sleep(0.2)
    raise AssertionError("the run shows no progress")


def test_a_reload_shows_the_same_run_with_its_settings_and_another_tab_stops_it(
    browser, page, app_url
):
    open_page(page, app_url, "lr", "Run range test")
    sidebar_number(page, "Iterations", "100000")
    sidebar_number(page, "Batch size", "32")
    page.get_by_role("button", name="Run range test").first.click()
    before = wait_progress(page)
    assert "job.rt_job=" in page.url and "rt_iters=100000" in page.url
    page.reload()
    page.get_by_text("iterations so far").first.wait_for()
    after = wait_progress(page, before + 1)  # the same run, still going
    assert after > before
    assert sidebar_value(page, "Iterations") == "100000"
    assert sidebar_value(page, "Batch size") == "32"
    other = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    other.set_default_timeout(60_000)
    other.goto(page.url)  # a link to the running job, sent to a colleague
    other.get_by_text("iterations so far").first.wait_for()
    other.get_by_role("button", name="Stop").click()
    page.get_by_text("Suggestions").wait_for(timeout=60_000)  # the first tab sees it end
    no_exception(page)
    page.get_by_text("Round 1 (the whole range): stopped").first.wait_for()
    other.context.close()


def test_a_sidebar_error_and_back_keeps_the_page_settings(page, app_url):
    open_page(page, app_url, "lr", "Run range test")
    sidebar_number(page, "Iterations", "345")
    hidden = page.locator('[data-testid="stSidebar"]').get_by_label(
        "Hidden layers (units, comma-separated)"
    )
    hidden.fill("12, abc")
    hidden.press("Enter")
    settle(page)
    page.locator('[data-testid="stAlert"]').first.wait_for()  # the sidebar's error
    hidden.fill("256")
    hidden.press("Enter")
    settle(page)
    page.get_by_role("button", name="Run range test").wait_for()
    assert sidebar_value(page, "Iterations") == "345"
    no_exception(page)


def workers_of(server: subprocess.Popen) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(server.pid)], capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


def test_eight_tabs_on_a_fresh_app_all_finish_and_a_killed_worker_is_reported(browser, tmp_path):
    db = tmp_path / "runs.db"
    server, url = serve(dict(os.environ, LRBS_DB=str(db)))
    contexts = []
    try:
        pages = []
        for _ in range(8):
            ctx = browser.new_context(viewport={"width": 1200, "height": 900})
            contexts.append(ctx)
            pg = ctx.new_page()
            pg.set_default_timeout(180_000)
            open_page(pg, url, "lr", "Run range test")
            pages.append(pg)
        started = time.time()
        for pg in pages:
            pg.get_by_role("button", name="Run range test").first.click()
        for pg in pages:
            pg.get_by_text("Suggestions").wait_for()
            no_exception(pg)
        took = time.time() - started
        with RunStore(db) as store:
            runs = store.runs(kind="lr-find")
        assert len(runs) == 8 and set(runs.status) <= {"finished", "diverged"}, runs.status
        print(f"8 tabs: all results in {took:.1f} s")

        # a worker killed mid-job: the job shows as interrupted, with its points
        pg = pages[0]
        sidebar_number(pg, "Iterations", "100000")
        pg.get_by_role("button", name="Run range test").first.click()
        wait_progress(pg)
        time.sleep(1.5)
        with RunStore(db) as store:
            run = store.runs(kind="lr-find").iloc[0]
            pid = store.run(int(run.id))["pid"]
        assert pid in workers_of(server)
        os.kill(pid, signal.SIGKILL)
        pg.get_by_text("ended before it did").first.wait_for(timeout=30_000)
        with RunStore(db) as store:
            assert store.status(int(run.id)) == "interrupted"
            assert not store.points(int(run.id)).empty
        no_exception(pg)
    finally:
        for ctx in contexts:
            ctx.close()
        server.terminate()
        server.wait(10)
