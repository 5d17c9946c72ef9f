import json
import re

import pytest
from test_pages import charts, open_page
from test_pages_lr import wait

from lrbs.cli import main
from lrbs.experiments import noise_scale as ns


def noise_page():
    at = open_page("pages/noise.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.number_input(key="ns_steps").set_value(200).run()
    return at


def test_measure_then_check():
    at = noise_page()
    at.button(key="ns_job_run").click().run()
    wait(at, "ns_job")
    labels = [m.label for m in at.metric]
    assert "B_simple at the end of training" in labels and "Measurement overhead" in labels
    # what the number is, at which point of training, and why other pages' numbers differ
    note = next(i.value for i in at.info if "B_simple = tr(Σ)/|G|²" in i.value)
    assert re.search(r"after 1\d\d training steps at batch 128, lr 0\.1 \(training loss", note)
    assert ns.WHY_THEY_DIFFER in note
    assert len(charts(at)) == 3  # B_simple, loss, eps_opt(B)
    at.toggle(key="ns_check").set_value(True).run()
    at.text_input(key="nc_batches").set_value("16, 64, 256").run()
    at.button(key="nc_job_run").click().run()
    wait(at, "nc_job")
    assert at.dataframe[-1].value.batch.tolist() == [16, 64, 256]
    text = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning)
    assert "B_crit" in text or "fit needs" in text or "non-positive" in text


def test_a_diverged_measurement_is_said_and_check_it_explains():
    """Issue 16: "Check it" after a diverged run showed an AttributeError traceback."""
    at = noise_page()
    at.number_input(key="ns_lr").set_value(1e5).run()
    at.button(key="ns_job_run").click().run()
    job = wait(at, "ns_job")
    assert job.snapshot().result.status == "diverged"
    assert any("diverged" in e.value for e in at.error)
    at.toggle(key="ns_check").set_value(True).run()
    assert not at.exception, at.exception
    assert any("diverged" in w.value and "lower it" in w.value for w in at.warning)
    assert "nc_job" not in at.session_state  # nothing to check: no Run button offered


def test_a_cli_run_is_offered_by_the_page(tmp_path, capsys):
    db = str(tmp_path / "h.db")
    code = main(["noise-scale", "--dataset", "digits", "--steps", "200", "--db", db, "--json"])
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and figures["status"] == "finished"
    at = noise_page()
    at.text_input(key="s_db_path").set_value(db).run()
    offers = [i.value for i in at.info if "These settings already ran" in i.value]
    assert offers and f"run #{figures['run_id']}" in offers[0]
    at.button(key="ns_job_load").click().run()
    assert not at.exception, at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["B_simple at the end of training"] == f"{figures['b_simple']:,.0f}"
    assert len(charts(at)) == 3


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("ns_small", 600, "must be smaller than the big batch"),
        ("ns_big", 5000, "larger than the training set"),
        ("ns_every", 0, "measurement interval k must be at least 1"),
    ],
)
def test_noise_bad_input(key, value, message):
    at = noise_page()
    at.number_input(key=key).set_value(value).run()
    assert not at.exception
    assert any(message in e.value for e in at.error)
