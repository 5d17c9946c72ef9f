"""The auto-tune page through AppTest: a small study on two worker processes."""

from test_pages import charts, open_page

from lrbs.charts import IMPORTANCES_NOTE


def test_autotune_page_runs_a_study_and_offers_the_best(tmp_path):
    at = open_page("pages/autotune.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="at_trials").set_value(4)
    at.radio(key="at_budget_kind").set_value("epochs")
    at.number_input(key="at_budget").set_value(2.0)
    at.text_input(key="at_storage").set_value(str(tmp_path / "s.journal"))
    at.text_input(key="at_name").set_value("page-study").run()
    assert not at.error
    at.button(key="at_job_run").click().run()
    assert not at.exception, at.exception
    job = at.session_state["at_job"]
    assert job.join(240), "the study did not finish"
    result = job.snapshot().result
    assert result is not None and result.status == "finished", job.snapshot().error
    assert len(result.rows["workers"]) == 2  # two worker processes, none of them failed
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[-1].value
    assert sorted(table.trial) == [0, 1, 2, 3]
    assert any(m.label == "learning rate" for m in at.metric)
    # trials, search space, reported curves; 4 trials give no importances: a sentence
    # stands where their chart would be, never an empty frame
    assert len(charts(at)) == 3
    assert any(c.value == IMPORTANCES_NOTE for c in at.caption)
    from lrbs.runs.store import RunStore, default_path

    def recorded():  # the session's history holds other tests' studies too
        with RunStore(default_path()) as store:
            runs = store.runs(kind="autotune")
            mine = runs[runs.name == "page-study"]
            return mine, [len(store.points(int(i), "trials")) for i in mine.id]

    mine, sizes = recorded()
    assert len(mine) == 1 and sizes == [4]  # recorded in the run history, once
    at.button(key="at_use").click().run()
    assert len(recorded()[0]) == 1
    best = table[table.state == "complete"].sort_values("value").iloc[0]
    assert at.session_state["chosen_lr"] == best.lr
    assert at.session_state["chosen_batch"] == best.batch_size


def test_autotune_page_bad_input_and_bad_storage(tmp_path):
    at = open_page("pages/autotune.py")
    at.number_input(key="at_lr_min").set_value(5.0).run()
    assert any("must be below the highest" in e.value for e in at.error)
    at.number_input(key="at_lr_min").set_value(1e-3)
    at.text_input(key="at_batches").set_value("16, abc").run()
    assert any("'abc' is not a number" in e.value for e in at.error)
    at.text_input(key="at_batches").set_value("32")
    at.text_input(key="at_storage").set_value("sqlite:////no/such/dir/x.db").run()
    at.button(key="at_job_run").click().run()
    assert at.session_state["at_job"].join(60)
    at.run()
    assert not at.exception
    assert any("unable to open database file" in e.value for e in at.error)


def test_watching_a_study_fed_elsewhere(tmp_path):
    from lrbs.core.data import DataSpec
    from lrbs.core.setup import Setup
    from lrbs.experiments import autotune as engine

    url = str(tmp_path / "elsewhere.journal")
    space = engine.SearchSpace(lr_min=1e-2, lr_max=1.0, batches=(32, 64))
    cfg = engine.Config(space=space, seconds=None, epochs=1, pruner="none")
    engine.create_study(engine.open_storage(url), "fed", Setup(DataSpec("digits")), cfg)
    assert engine.run_worker(url, "fed", 2) == 2  # as another machine's worker would
    at = open_page("pages/autotune.py")
    at.text_input(key="at_storage").set_value(url).run()
    at.selectbox(key="at_pick").set_value("fed").run()
    at.button(key="at_watch_btn").click().run()
    assert not at.exception, at.exception
    assert any(h.value == "Best configuration" for h in at.subheader)
    assert sorted(at.dataframe[-1].value.trial) == [0, 1]
    assert len(charts(at)) >= 3
    assert any("Study **fed**" in c.value for c in at.caption)
