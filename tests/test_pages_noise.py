import pytest
from test_pages import charts, open_page
from test_pages_lr import wait


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
    assert "B_simple (critical batch ≈)" in labels and "Measurement overhead" in labels
    assert len(charts(at)) == 3  # B_simple, loss, eps_opt(B)
    at.toggle(key="ns_check").set_value(True).run()
    at.text_input(key="nc_batches").set_value("16, 64, 256").run()
    at.button(key="nc_job_run").click().run()
    wait(at, "nc_job")
    assert at.dataframe[-1].value.batch.tolist() == [16, 64, 256]
    text = " ".join(m.value for m in at.markdown) + " ".join(w.value for w in at.warning)
    assert "B_crit" in text or "fit needs" in text or "non-positive" in text


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
