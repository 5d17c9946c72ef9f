"""The run history through the pages: runs are saved, survive a restart of the app (a new
session), can be loaded instead of retrained, and the History page filters, overlays,
renames, exports and deletes."""

from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.runs.store import RunStore, default_path


def run_range_test():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="rt_iters").set_value(60).run()
    at.button(key="rt_job_run").click().run()
    wait(at, "rt_job")
    return at


def test_a_run_is_saved_and_offered_after_a_restart():
    before = len(RunStore(default_path()).runs())
    first = run_range_test()
    assert not any("already ran" in i.value for i in first.info)  # it is the run on show
    suggestions = first.dataframe[0].value
    runs = RunStore(default_path()).runs()
    assert len(runs) == before + 1
    assert runs.kind.iloc[0] == "lr-find" and runs.points.iloc[0] > 0
    # a new session, as after restarting the app: the stored result is offered, not retrained
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="rt_iters").set_value(60).run()
    assert any("already ran" in i.value for i in at.info)
    at.button(key="rt_job_load").click().run()
    assert not at.exception
    assert "rt_job" not in at.session_state or at.session_state["rt_job"] is None
    loaded = at.dataframe[0].value
    assert list(loaded.suggestion) == list(suggestions.suggestion)
    assert (abs(loaded["learning rate"] - suggestions["learning rate"]) < 1e-12).all()


def test_sweep_result_loads_from_the_history():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.radio(key="sw_budget_kind").set_value("steps").run()
    at.number_input(key="sw_budget").set_value(15.0).run()
    at.button(key="sw_job_run").click().run()
    wait(at, "sw_job")
    table = at.dataframe[0].value
    at2 = open_page("pages/lr.py")
    at2.selectbox(key="s_dataset").set_value("digits").run()
    at2.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at2.radio(key="sw_budget_kind").set_value("steps").run()
    at2.number_input(key="sw_budget").set_value(15.0).run()
    at2.button(key="sw_job_load").click().run()
    assert not at2.exception
    assert at2.dataframe[0].value.val_loss.tolist() == table.val_loss.tolist()


def test_history_page_filter_overlay_rename_export_delete():
    run_range_test()
    store = RunStore(default_path())
    ids = [int(i) for i in store.runs(kind="lr-find").id[:2]]
    at = open_page("pages/history.py")
    assert not at.exception
    assert len(at.dataframe[0].value) >= 1
    at.multiselect(key="h_kind").set_value(["lr-find"]).run()
    assert set(at.dataframe[0].value.kind) == {"lr-find"}
    at.session_state["h_selected"] = ids
    at.run()
    assert not at.exception
    assert len(charts(at)) == 1  # the overlay
    assert at.get("download_button")
    at.text_input[0].set_value("my baseline")
    at.button[0].click().run()  # the form's Save
    assert store.run(ids[0])["name"] == "my baseline"
    at.button(key="h_delete").click().run()
    at.button(key="h_delete_yes").click().run()
    assert not at.exception
    remaining = set(RunStore(default_path()).runs().id)
    assert not (set(ids) & remaining)


def test_history_page_with_a_foreign_file(tmp_path):
    bad = tmp_path / "notes.db"
    bad.write_text("not a database")
    at = open_page("pages/history.py")
    at.text_input(key="s_db_path").set_value(str(bad)).run()
    assert not at.exception
    assert any("not an lrbs run history" in e.value for e in at.error)
    assert bad.read_text() == "not a database"
