""" "Use this learning rate / batch size" reaches every page that takes one (AppTest)."""

import pytest
from test_pages import open_page

# page -> (widget kind, key, the value the choice lr = 0.03, batch = 48 gives it)
SEEDED = {
    "pages/lr.py": [("number_input", "rt_batch", 48)],
    "pages/batch.py": [("number_input", "bs_lr", 0.03), ("text_input", "bs_grid", "48")],
    "pages/schedules.py": [
        ("number_input", "ls_lr", 0.03),
        ("number_input", "ls_base", 0.00949),
        ("number_input", "ls_max", 0.0949),
        ("number_input", "ls_batch", 48),
    ],
    "pages/bs_schedule.py": [("number_input", "bq_lr", 0.03), ("number_input", "bq_batch", 48)],
    "pages/noise.py": [("number_input", "ns_lr", 0.03), ("number_input", "ns_batch", 48)],
    "pages/sharpness.py": [("text_input", "sh_lrs", "0.015, 0.03, 0.06")],
    "pages/autotune.py": [
        ("number_input", "at_lr_min", 0.00949),
        ("number_input", "at_lr_max", 0.0949),
        ("text_input", "at_batches", "48"),
    ],
}


def test_a_chosen_lr_and_batch_are_every_page_s_default_and_say_so():
    at = open_page()
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.session_state["chosen_lr"] = 0.03
    at.session_state["chosen_lr_source"] = "the range test (steepest)"
    at.session_state["chosen_batch"] = 48
    at.session_state["chosen_batch_source"] = "auto-tune study s"
    for page, widgets in SEEDED.items():
        at.switch_page(page).run()
        assert not at.exception, (page, at.exception)
        for kind, key, want in widgets:
            value = getattr(at, kind)(key=key).value
            if isinstance(want, str) and kind == "text_input" and key != "sh_lrs":
                assert want in value.replace(" ", "").split(","), (page, key, value)
            elif isinstance(want, str):
                assert value == want, (page, key, value)
            else:
                assert value == pytest.approx(want, rel=1e-3), (page, key, value)
        captions = " ".join(c.value for c in at.sidebar.caption)
        assert "From the range test (steepest): lr 0.03" in captions or page == "pages/lr.py"
        assert "From auto-tune study s: batch 48" in captions or page == "pages/sharpness.py"


def test_a_value_typed_afterwards_is_kept_until_the_next_choice():
    at = open_page("pages/bs_schedule.py")
    at.session_state["chosen_lr"] = 0.03
    at.run()
    assert at.number_input(key="bq_lr").value == pytest.approx(0.03)
    at.number_input(key="bq_lr").set_value(0.2).run()
    at.switch_page("pages/noise.py").run()
    at.switch_page("pages/bs_schedule.py").run()
    assert at.number_input(key="bq_lr").value == pytest.approx(0.2)
    assert any("(changed here)" in c.value for c in at.sidebar.caption)
    at.session_state["chosen_lr"] = 0.05
    at.run()
    assert at.number_input(key="bq_lr").value == pytest.approx(0.05)


def test_the_sweep_grid_centres_on_the_chosen_lr():
    at = open_page("pages/lr.py")
    at.selectbox(key="s_dataset").set_value("digits").run()
    at.radio(key="lr_mode").set_value("Sweep at a fixed budget").run()
    at.session_state["chosen_lr"] = 0.03
    at.run()
    at.button(key="sw_centre_chosen").click().run()
    assert at.text_input(key="sw_grid").value == "0.003, 0.00949, 0.03, 0.0949, 0.3"
