"""Auto-tuning with Optuna: workers sharing one storage, pruning, seeding, storage errors."""

import json
import math
import threading
import time

import pytest

from lrbs.cli import main
from lrbs.core.data import DataSpec
from lrbs.core.errors import ConfigError
from lrbs.core.setup import Setup, load_tensors
from lrbs.experiments import autotune as at
from lrbs.runs.experiment import execute, rebuild
from lrbs.runs.sink import Sink
from lrbs.runs.store import RunStore, default_path, recorder

DIGITS = Setup(DataSpec("digits"))


def make_study(tmp_path, name="s", url=None, **kw):
    url = url or str(tmp_path / "study.journal")
    space = at.SearchSpace(lr_min=1e-3, lr_max=1.0, batches=(32, 64, 128))
    cfg = at.Config(space=space, seconds=None, **kw)
    at.create_study(at.open_storage(url), name, DIGITS, cfg)
    return url, cfg


@pytest.mark.parametrize("kind", ["journal file", "database URL"])
def test_two_worker_processes_share_one_study(tmp_path, kind):
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "database URL" else None
    url, _ = make_study(tmp_path, url=url, epochs=2)
    workers = at.launch_workers(url, "s", 7, 2, tmp_path / "logs")
    assert workers.wait(240), "workers did not finish"
    assert workers.failures() == []
    logs = sorted(p.read_text() for p in workers.logs)
    assert "ran 3 trial(s)" in logs[1] and "ran 4 trial(s)" in logs[0]  # 7 split as 4 + 3
    study = at.load_study(at.open_storage(url), "s")[0]
    trials = at.trials_frame(study)
    assert sorted(trials.trial) == list(range(7))  # each recorded once, none lost
    assert set(trials.state) <= {"complete", "pruned"}
    done = trials[trials.state == "complete"]
    best = at.best(trials)
    assert best.value == done.value.min() == study.best_value
    assert best.batch_size in (32, 64, 128) and 1e-3 <= best.lr <= 1.0


def test_a_bad_trial_is_pruned(tmp_path):
    url, _ = make_study(tmp_path, epochs=6)
    study = at.load_study(at.open_storage(url), "s")[0]
    for lr in (0.1, 0.2, 0.05):
        study.enqueue_trial({"lr": lr, "batch_size": 32})
    study.enqueue_trial({"lr": 1e-3, "batch_size": 128})  # barely moves in 6 epochs
    assert at.run_worker(url, "s", 4) == 4
    trials = at.trials_frame(at.load_study(at.open_storage(url), "s")[0]).set_index("trial")
    assert (trials.loc[[0, 1, 2], "state"] == "complete").all()
    bad = trials.loc[3]
    assert bad.state == "pruned" and bad.status == "pruned"
    assert bad.epochs < 6  # stopped early, not trained to the end
    assert bad.value > trials.loc[[0, 1, 2], "value"].max()


def test_stop_ends_the_current_trial_and_the_worker(tmp_path):
    url, _ = make_study(tmp_path, epochs=1000)
    workers = at.launch_workers(url, "s", 3, 1, tmp_path / "logs")
    study = at.load_study(at.open_storage(url), "s")[0]
    deadline = time.time() + 60
    while not study.get_trials(deepcopy=False) and time.time() < deadline:
        time.sleep(0.5)
    time.sleep(1.0)
    workers.stop()
    assert workers.wait(30) and workers.procs[0].returncode == 0
    trials = at.trials_frame(at.load_study(at.open_storage(url), "s")[0])
    assert len(trials) == 1  # no new trial after the stop
    assert trials.state[0] == "fail" and trials.status[0] == "stopped"


def test_search_space_seeded_from_a_range_test_and_the_probe():
    space = at.SearchSpace.around(0.5, 1000)
    assert space.lr_min == pytest.approx(0.5 / math.sqrt(10))
    assert space.lr_max == pytest.approx(0.5 * math.sqrt(10))
    assert space.batches == (16, 32, 64, 128, 256, 512)
    data = load_tensors(DIGITS)
    seeded, found = at.seed_space(DIGITS, data, at.SearchSpace(), cap_bytes=2 * 2**20)
    assert found["memory_limited"] and max(seeded.batches) <= found["largest_batch"]
    steep = found["suggestions"]["steep"]
    assert seeded.lr_min < steep < seeded.lr_max
    assert seeded.lr_max / seeded.lr_min == pytest.approx(10)
    unlimited, found = at.seed_space(DIGITS, data, at.SearchSpace())
    assert not found["memory_limited"] and max(unlimited.batches) <= data.n_train


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgresql://lrbs:secret@127.0.0.1:1/none", "Connection refused"),
        ("mysql://u@127.0.0.1:1/x", "database driver 'MySQLdb' is not installed"),
        ("sqlite:////no/such/dir/x.db", "unable to open database file"),
    ],
)
def test_an_unreachable_storage_is_a_clear_message(url, message, capsys):
    with pytest.raises(ConfigError, match=message) as err:
        at.open_storage(url)
    assert "secret" not in str(err.value)
    code = main(["autotune", "run", "--dataset", "digits", "--storage", url, "--trials", "1"])
    assert code == 2 and message in capsys.readouterr().err


def test_a_name_taken_by_other_settings_is_refused(tmp_path):
    url, cfg = make_study(tmp_path, epochs=2)
    at.create_study(at.open_storage(url), "s", DIGITS, cfg)  # the same settings: fine
    with pytest.raises(ConfigError, match="already exists with other settings"):
        at.create_study(at.open_storage(url), "s", DIGITS, at.Config(epochs=3, seconds=None))
    with pytest.raises(ConfigError, match="no study named"):
        at.load_study(at.open_storage(url), "other")


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"lr_min": 1.0, "lr_max": 0.1}, "must be below the highest"),
        ({"batches": ()}, "at least one batch size"),
        ({"batches": (0, 32)}, "batch size must be at least 1"),
        ({"optimizers": ("rmsprop",)}, "unknown optimizer"),
    ],
)
def test_bad_search_spaces(kw, message):
    with pytest.raises(ConfigError, match=message):
        at.SearchSpace(**kw)


def test_split_trials_and_cli_run_json(tmp_path, capsys):
    assert at.split_trials(7, 2) == [4, 3] and at.split_trials(2, 5) == [1, 1]
    out = tmp_path / "trials.csv"
    code = main(
        [
            "autotune",
            "run",
            "--dataset",
            "digits",
            "--trials",
            "3",
            "--workers",
            "1",
            "--seconds-per-trial",
            "1",
            "--storage",
            str(tmp_path / "j.journal"),
            "--study",
            "cli",
            "--json",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    figures = json.loads(captured.out.strip().splitlines()[-1])
    assert figures["study"] == "cli" and sum(figures["trials"].values()) == 3
    assert figures["lr"] == figures["best"]["lr"]
    assert figures["batch_size"] in (16, 32, 64, 128, 256, 512)
    assert {
        "dataset",
        "model",
        "study",
        "storage",
        "trials",
        "best",
        "lr",
        "batch_size",
        "val_loss",
        "status",
        "run_id",
    } <= set(figures)
    assert figures["status"] == "finished" and figures["workers"] == 1
    assert out.read_text().count("\n") == 4  # header + 3 trials
    with RunStore(default_path()) as store:  # recorded as every experiment is, trial by trial
        info = store.run(figures["run_id"])
        assert info["kind"] == "autotune" and info["status"] == "finished"
        assert len(store.points(figures["run_id"], "trials")) == 3


def test_objective_best_is_the_lowest_loss_reached_and_final_the_last(tmp_path):
    values = {}
    for objective in ("best", "final"):
        url = str(tmp_path / f"{objective}.journal")
        space = at.SearchSpace(lr_min=1e-3, lr_max=3.0, batches=(16,))
        cfg = at.Config(space=space, seconds=None, epochs=8, pruner="none", objective=objective)
        study = at.create_study(at.open_storage(url), "s", DIGITS, cfg)
        study.enqueue_trial({"lr": 2.0, "batch_size": 16})  # noisy: its loss goes up and down
        at.run_worker(url, "s", 1)
        trial = at.load_study(at.open_storage(url), "s")[0].trials[0]
        values[objective] = (trial.value, trial.intermediate_values)
    best, reports = values["best"]
    final, raw = values["final"]
    assert list(reports.values()) == sorted(reports.values(), reverse=True)  # running minimum
    assert best == min(raw.values()) <= final


def test_near_best_is_the_band_within_tolerance():
    import pandas as pd

    trials = pd.DataFrame(
        {
            "trial": [0, 1, 2, 3],
            "state": ["complete"] * 3 + ["pruned"],
            "value": [1.0, 1.005, 1.2, 0.5],
            "lr": [0.1, 0.2, 0.3, 0.4],
            "batch_size": [16, 32, 64, 128],
            "optimizer": "sgd",
            "warmup_epochs": 0.0,
        }
    )
    assert list(at.near_best(trials).trial) == [0, 1]  # the pruned trial's 0.5 is no result
    assert at.best(trials).trial == 0


def test_the_best_s_noise_is_its_repeats_spread_or_a_note():
    import pandas as pd

    def result(values, lrs):
        trials = pd.DataFrame(
            {
                "trial": range(len(values)),
                "state": "complete",
                "value": values,
                "lr": lrs,
                "batch_size": 32,
                "optimizer": "sgd",
                "warmup_epochs": 0.0,
            }
        )
        return at.Result(None, {"trials": trials.to_dict("records")})

    # the best settings (lr 0.1) ran twice: 1.0 and 1.2, mean 1.1, std 0.1414
    assert (
        "ran 2 times here: validation loss 1.1000 ± 0.1414 (2 seeds)"
        in result([1.0, 1.2, 1.5], [0.1, 0.1, 0.3]).noise_text()
    )
    assert "Each setting ran once" in result([1.0, 1.5], [0.1, 0.3]).noise_text()


def test_more_workers_than_cores_is_a_warning_and_more_than_32_is_refused():
    assert at.workers_warning(2, 2) is None
    text = at.workers_warning(64, 2)
    assert "64 worker processes on 2 CPU cores" in text and "take turns" in text
    with pytest.raises(ConfigError, match="workers must be at most 32"):
        at.Config(workers=64)


def test_configs_are_keyword_only_and_the_default_budget_is_explicit():
    with pytest.raises(TypeError):
        at.SearchSpace(1e-3, 1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        at.Config(at.SearchSpace())  # type: ignore[misc]
    assert at.Config().seconds == 10.0 and at.Config().epochs is None
    assert at.Config(epochs=2).seconds is None  # epochs alone: no time limit added
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        at.Config(workers=0)
    with pytest.raises(ConfigError, match="pruner: unknown value"):
        at.Config(pruner="fast")


def test_study_settings_round_trip_and_keep_their_old_keys():
    cfg = at.Config(
        space=at.SearchSpace(batches=(32, 64)),
        epochs=2,
        trials=7,
        workers=3,
        study="x",
        storage="y",
    )
    stored = at.settings(DIGITS, cfg)
    assert set(stored["tune"]) == {"space", "seconds", "epochs", "pruner", "seed", "objective"}
    setup, back = at.from_settings(stored)
    assert setup == DIGITS and back.study_settings() == cfg.study_settings()
    assert back.trials == at.Config().trials  # how a machine runs it is not the study's


def test_a_stopped_study_keeps_its_ended_trials_in_the_history(tmp_path):
    """What Ctrl-C (the CLI) and Stop (the page) do: the study run ends after the current
    trials, and the history holds every trial that ended, streamed as it ended."""
    stop = threading.Event()

    class StopAtFirstTrial(Sink):
        def emit(self, channel: str, row: dict) -> None:
            if channel == "trials":
                stop.set()

    space = at.SearchSpace(lr_min=1e-2, lr_max=1.0, batches=(32, 64))
    cfg = at.Config(
        space=space,
        seconds=None,
        epochs=1,
        trials=200,  # far more than run before the stop arrives, even on a loaded machine
        workers=1,
        study="stop",
        storage=str(tmp_path / "j.journal"),
    )
    rec = recorder(at.KIND, DIGITS, cfg, path=tmp_path / "h.db", name="stop")
    rec.start()
    result = execute(at, DIGITS, cfg, sink=StopAtFirstTrial(), stop=stop, recorder=rec)
    assert result.status == "stopped"
    trials = result.trials()
    assert 1 <= len(trials) < 200 and trials.trial.is_unique
    with RunStore(tmp_path / "h.db") as store:
        info = store.run(rec.run_id)
        assert info["status"] == "stopped"
        assert len(store.points(rec.run_id, "trials")) == len(trials)
        pts = store.points(rec.run_id)
    rows = {
        ch: part.drop(columns="channel").dropna(axis=1, how="all").to_dict("records")
        for ch, part in pts.groupby("channel", sort=False)
    }
    loaded = rebuild(at, info, rows)  # the history's record rebuilds the same result
    assert loaded.config == cfg and loaded.summary() == result.summary()
    assert loaded.trials().trial.tolist() == trials.trial.tolist()
    study = at.load_study(at.open_storage(cfg.storage), "stop")[0]
    assert len(at.trials_frame(study)) == len(trials)  # no trial left running or unrecorded


def test_the_readme_command_lines_parse_to_the_same_settings():
    from lrbs.cli import flags
    from lrbs.cli.main import build_parser

    parser = build_parser()
    a = parser.parse_args(
        [
            "autotune",
            "run",
            "--trials",
            "20",
            "--workers",
            "2",
            "--seconds-per-trial",
            "5",
            "--seed-space",
            "--out",
            "trials.csv",
            "--json",
        ]
    )
    cfg = flags.build(a, at.Config, ("config",))
    assert (cfg.trials, cfg.workers, cfg.seconds, cfg.seed_space) == (20, 2, 5.0, True)
    assert a.out == "trials.csv" and a.json and a.experiment is at
    a = parser.parse_args(
        [
            "autotune",
            "run",
            "--study",
            "resnet-lr-bs",
            "--trials",
            "10",
            "--workers",
            "2",
            "--storage",
            "postgresql://lrbs:secret@db/lrbs",
            "--dataset",
            "fashion-mnist",
            "--seconds-per-trial",
            "30",
            "--epochs-per-trial",
            "3",
            "--lr-min",
            "0.01",
            "--lr-max",
            "1",
            "--batches",
            "32",
            "64",
            "--optimizers",
            "sgd",
            "adam",
            "--warmups",
            "0",
            "1",
            "--momentum",
            "0.8",
            "--pruner",
            "hyperband",
            "--objective",
            "final",
            "--cap-mib",
            "512",
            "--seed",
            "3",
        ]
    )
    cfg = flags.build(a, at.Config, ("config",))
    setup = flags.build(a, Setup, ("setup",))
    assert cfg.study == "resnet-lr-bs" and cfg.storage.startswith("postgresql://")
    assert (cfg.seconds, cfg.epochs, cfg.pruner, cfg.objective) == (30.0, 3.0, "hyperband", "final")
    assert cfg.space == at.SearchSpace(
        lr_min=0.01,
        lr_max=1.0,
        batches=(32, 64),
        optimizers=("sgd", "adam"),
        warmups=(0.0, 1.0),
        momentum=0.8,
    )
    assert cfg.cap_mib == 512 and cfg.seed == 3 == setup.seed
    assert setup.data.name == "fashion-mnist"
    a = parser.parse_args(
        [
            "autotune",
            "worker",
            "--study",
            "resnet-lr-bs",
            "--trials",
            "20",
            "--storage",
            "postgresql://lrbs:secret@db/lrbs",
            "--worker",
            "1",
            "--threads",
            "1",
            "--json",
        ]
    )
    assert (a.study, a.trials, a.worker, a.threads, a.json) == ("resnet-lr-bs", 20, 1, 1, True)
    from lrbs.cli.autotune import worker_command

    assert a.handler is worker_command
