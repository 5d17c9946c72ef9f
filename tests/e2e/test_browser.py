"""Every page in a real browser: loads clean, takes a sidebar change, runs its experiment with a
chart that grows while training, stops mid-run keeping the partial result, downloads a CSV that
matches the page, and keeps finished results across navigation."""

import time

import pandas as pd
import pytest
from browser_helpers import (
    charts,
    no_exception,
    open_page,
    progress_count,
    settle,
    shot,
    sidebar_number,
    wait_chart,
)


def download_csv(page, button: str, tmp_path) -> pd.DataFrame:
    with page.expect_download() as info:
        page.get_by_role("button", name=button).click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    return pd.read_csv(path)


def test_home(page, app_url):
    open_page(page, app_url, "", "the learning-rate & batch-size lab")
    no_exception(page)
    assert page.get_by_text("Datasets", exact=True).count() == 1
    assert wait_chart(page) == 1  # samples per class of the current dataset
    for title in (
        "Gradient descent in 1-D",
        "Find the learning rate",
        "Batch size",
        "Batch-size scheduling",
        "Noise scale & critical batch",
        "LR schedules",
        "Auto-tune",
    ):
        assert page.get_by_role("link", name=title).count() >= 1
    shot(page, "home")


def test_gd_page_change_and_download(page, app_url, tmp_path):
    open_page(page, app_url, "gd1d", "Gradient descent on a 1-D loss")
    no_exception(page)
    assert wait_chart(page, 5) == 5
    sidebar_number(page, "Steps", "30")
    # the rerun has drawn the change in all three panels (on a busy machine the rest of the
    # page, its download button included, may still hold the last run's elements a moment)
    end = time.time() + 60
    while page.get_by_text("after 30 steps").count() < 3 and time.time() < end:
        time.sleep(0.2)
    settle(page)
    no_exception(page)
    df = download_csv(page, "Download the paths (CSV)", tmp_path)
    while len(df) != 3 * 31 and time.time() < end:  # a stale button gives the last run's
        settle(page)
        df = download_csv(page, "Download the paths (CSV)", tmp_path)
    assert len(df) == 3 * 31 and sorted(df.lr.unique()) == [0.1, 0.5, 1.1]
    assert df[df.lr == 1.1].status.iloc[0] == "diverged"
    shot(page, "gd1d")


def test_range_test_streams_then_zooms_and_survives_navigation(page, app_url, tmp_path):
    open_page(page, app_url, "lr", "Run range test")
    sidebar_number(page, "Iterations", "5000")  # long enough to watch it stream
    page.get_by_role("button", name="Run range test").click()
    page.get_by_text("iterations so far").first.wait_for()
    seen, most_charts = [], 0
    for _ in range(80):  # the chart redraws every second while the test runs
        n = progress_count(page, r"(\d+) iterations so far")
        most_charts = max(most_charts, charts(page))
        if n is not None:
            seen.append(n)
        elif seen:
            break  # the run has ended
        time.sleep(0.25)
    assert len(set(seen)) >= 2 and seen == sorted(seen), f"the curve did not grow: {seen}"
    assert most_charts >= 1, "no chart while training"
    page.get_by_text("Suggestions").wait_for()
    settle(page)
    no_exception(page)
    caption = page.get_by_text("iterations in").first.inner_text()
    n = int(caption.split(" iterations in")[0].split()[-1])
    df = download_csv(page, "Download every curve (CSV)", tmp_path)
    assert len(df) == n and set(df.columns) >= {"lr", "loss", "smoothed", "round", "seed"}
    shot(page, "lr_range_test")
    page.get_by_role("link", name="Gradient descent in 1-D").first.click()
    page.get_by_text("Gradient descent on a 1-D loss").wait_for()
    page.get_by_role("link", name="Find the learning rate").first.click()
    page.get_by_text("Suggestions").wait_for()  # the finished result is still there
    no_exception(page)


def test_sweep_stop_keeps_the_partial_curve(page, app_url, tmp_path):
    open_page(page, app_url, "lr", "Run range test")
    page.get_by_text("Sweep at a fixed budget").click()
    page.get_by_role("button", name="Run sweep").wait_for()
    settle(page)
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("runs done").first.wait_for()
    time.sleep(3)
    page.get_by_role("button", name="Stop").click()
    # the finished view: its heading, then the app idle (a fragment tick may still be queued
    # when the job ends), then its charts; only then the download, which does not rerun
    page.get_by_role("heading", name="Results").wait_for()
    settle(page)
    no_exception(page)
    assert wait_chart(page) >= 1, "no chart of the stopped sweep"
    table = page.locator('[data-testid="stDataFrame"]').first
    assert table.count() == 1
    curves = download_csv(page, "Download the curves (CSV)", tmp_path)
    assert curves.run_id.nunique() < 4  # stopped before every rate ran
    assert len(curves) > 0 and charts(page) >= 1
    shot(page, "lr_sweep_stopped")


@pytest.mark.parametrize(
    "path, ready, button, done_text, name",
    [
        ("batch", "Run sweep", "Run sweep", "Results", "batch_sweep"),
        ("bs_schedule", "Train the regimes", "Train the regimes", "Verdict", "bs_schedule"),
        ("schedules", "Train the schedules", "Train the schedules", "Lowest final", "schedules"),
        ("autotune", "Start the study", "Start the study", "Best configuration", "autotune"),
        (
            "noise",
            "Measure the noise scale",
            "Measure the noise scale",
            "Two noise scales",
            "noise",
        ),
    ],
)
def test_training_pages_run_their_defaults(
    page, app_url, path, ready, button, done_text, name, tmp_path
):
    open_page(page, app_url, path, ready)
    no_exception(page)
    if path == "batch":  # shorter budget than the default, same shape
        sidebar_number(page, "Seconds each", "1")
    if path == "autotune":  # a small study: 4 trials of 1 s on the two worker processes
        sidebar_number(page, "Trials", "4")
        sidebar_number(page, "Seconds per trial", "1")
    page.get_by_role("button", name=button).click()
    page.get_by_text(done_text).first.wait_for(timeout=300_000)  # a busy shared machine
    settle(page)
    no_exception(page)
    assert wait_chart(page) >= 1
    shot(page, name)


def test_two_tabs_train_at_once(browser, app_url):
    pages = []
    for _ in range(2):
        ctx = browser.new_context(viewport={"width": 1200, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(90_000)
        open_page(pg, app_url, "lr", "Run range test")
        pages.append(pg)
    for pg in pages:
        pg.get_by_role("button", name="Run range test").click()
    for pg in pages:
        pg.get_by_text("Suggestions").wait_for()
        no_exception(pg)
    for pg in pages:
        pg.context.close()


def test_a_widget_change_during_a_run(page, app_url):
    open_page(page, app_url, "lr", "Run range test")
    sidebar_number(page, "Iterations", "3000")
    page.get_by_role("button", name="Run range test").click()
    page.get_by_text("iterations so far").first.wait_for()
    sidebar_number(page, "Batch size", "32")  # mid-run: the run goes on
    page.get_by_text("Suggestions").wait_for()
    settle(page)
    no_exception(page)
    assert wait_chart(page) >= 1


def test_the_app_restarted_mid_run_keeps_what_was_written(browser, tmp_path):
    """Kill the server while a run trains; a new server on the same history file lists the
    run, with the points written before the kill."""
    import os
    import signal

    from conftest import serve

    from lrbs.runs.store import RunStore

    db = tmp_path / "restart.db"
    env = dict(os.environ, LRBS_DB=str(db))

    first, url = serve(env)
    ctx = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        open_page(pg, url, "lr", "Run range test")
        sidebar_number(pg, "Iterations", "100000")
        page_stop = pg.get_by_role("button", name="Run range test")
        page_stop.click()
        pg.get_by_text("iterations so far").first.wait_for()
        end = time.time() + 60  # the worker may still be importing torch: wait for points
        while (progress_count(pg, r"(\d+) iterations") or 0) == 0 and time.time() < end:
            time.sleep(0.2)
        time.sleep(1.5)  # what the page shows is in the history already; a bit more
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
        ctx.close()
    deadline = time.time() + 10  # the worker ends within a second of its server
    while (runs := RunStore(db).runs()).status.tolist() != ["interrupted"]:
        assert time.time() < deadline, runs.status.tolist()
        time.sleep(0.2)
    assert runs.points.iloc[0] > 0
    second, url = serve(env)
    try:
        ctx = browser.new_context(viewport={"width": 1300, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        open_page(pg, url, "history", "Run history")
        pg.get_by_text("lr-find").first.wait_for(state="attached")  # a grid cell
        no_exception(pg)
        shot(pg, "history_after_restart")
        ctx.close()
    finally:
        second.terminate()
        second.wait(10)
