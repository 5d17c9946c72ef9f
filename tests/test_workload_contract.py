"""Errors inside a user's workload, each one clear line naming the file (or the objects given)
and what was expected against what was got, checked before any training: too few classes, an
output of the wrong shape, an optimizer() that is no optimizer, a file that exits, non-finite
data (at load in memory, batch by batch when streamed). Through the API and the CLI (exit 2,
no Python traceback)."""

import subprocess
import sys
import textwrap

import pytest
import torch
from support import ROOT
from torch import nn
from torch.utils.data import DataLoader, Dataset

import lrbs
from lrbs.cli import main
from lrbs.core.errors import LrbsError
from lrbs.core.workload import WorkloadError, load_workload

HEAD = """
import sys
import torch
from torch import nn
from torch.utils.data import Dataset
"""

CLASSES_4 = """
def data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 4, (64,), generator=g)
    return (x, y), (x[:16], y[:16])
"""


def write(tmp_path, body: str, name: str = "wl.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(HEAD) + textwrap.dedent(body))
    return p


def cli(capsys, path, *more: str) -> list[str]:
    """The CLI's stderr lines for an lr-find on `path`: it exits 2, its first line is the one
    message, and whatever follows is the user's own file's lines, never a Python traceback."""
    argv = ["lr-find", "--workload", str(path), "--iterations", "6", "--batch-size", "16"]
    assert main([*argv, "--no-store", *more]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert all(str(path) in ln for ln in err if ln.strip().startswith("File ")), err
    return err


def find(model, train, **kw):
    return lrbs.find_lr(model, train, **({"iterations": 6, "batch_size": 16} | kw))


# ------------------------------------------------------------------------ classes and shapes


@pytest.mark.parametrize("path", ["memory", "stream"])
def test_a_model_with_fewer_classes_than_the_targets(tmp_path, capsys, path):
    p = write(tmp_path, CLASSES_4 + "\ndef model():\n    return nn.Linear(4, 3)\n", "few.py")
    err = cli(capsys, p, "--data-path", path)
    assert err == [
        "error: the model of few.py outputs 3 classes but the targets go up to 3: make it "
        "output 4 (one score per class) or check the targets"
    ]


def test_the_classes_of_every_target_in_memory_not_only_the_first_batch():
    y = torch.zeros(64, dtype=torch.long)
    y[50] = 9  # far from the two samples of the check
    with pytest.raises(WorkloadError) as info:
        find(nn.Linear(4, 3), (torch.randn(64, 4), y))
    assert str(info.value).startswith(
        "the model you gave (Linear) outputs 3 classes but the targets go up to 9: make it "
        "output 10"
    )


class LateClass(Dataset):
    """Class targets within range but for one sample met later in training."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i):
        return torch.ones(4) * (i % 5), torch.tensor(9 if i == 40 else i % 2)


def test_a_class_out_of_range_met_while_streaming_is_one_line():
    """The check's two samples are in range; sample 40 is met in training (the CPU's
    IndexError, turned into one line)."""
    with pytest.raises(WorkloadError) as info:
        find(nn.Linear(4, 3), LateClass(), data_path="stream", iterations=10, batch_size=16)
    text = str(info.value)
    assert text.startswith("training the model you gave (Linear): a target is 9, a class the ")
    assert "\n" not in text


def test_a_negative_class_target():
    y = torch.randint(0, 2, (64,))
    y[20] = -1
    with pytest.raises(WorkloadError, match=r"class indices 0\.\.1, got -1"):
        find(nn.Linear(4, 2), (torch.randn(64, 4), y))


def test_ignore_index_targets_are_not_classes():
    y = torch.randint(0, 2, (64,))
    y[::7] = -100  # cross-entropy's ignore_index
    found = find(nn.Linear(4, 2), (torch.randn(64, 4), y))
    assert found.status == "finished"


@pytest.mark.parametrize(
    "model, loss, message",
    [
        (
            "nn.Linear(4, 1)",
            "nn.functional.mse_loss",
            "the model of wl.py outputs shape (2, 1) for a batch of 2 but the targets have "
            "shape (2,): mse_loss would broadcast them",
        ),
        (
            "nn.Linear(4, 3)",
            "nn.L1Loss()",
            "the model of wl.py outputs shape (2, 3) for a batch of 2 but the targets have "
            "shape (2,): L1Loss would broadcast them",
        ),
        (
            "nn.Linear(4, 2)",
            None,
            "the model of wl.py outputs shape (2, 2) but the targets are floats of shape (2,): "
            "cross_entropy reads float targets as class probabilities",
        ),
    ],
)
def test_a_regression_output_of_the_wrong_shape(tmp_path, capsys, model, loss, message):
    body = f"""
def data():
    x = torch.randn(64, 4)
    return (x, x.sum(1)), (x[:16], x[:16].sum(1))

def model():
    return {model}
"""
    if loss:
        body += f"\ndef loss():\n    return {loss}\n"
    p = write(tmp_path, body)
    err = cli(capsys, p)
    assert len(err) == 1 and err[0].startswith("error: " + message), err


def test_a_class_model_whose_output_is_one_number_per_sample():
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x).sum(1)

    with pytest.raises(WorkloadError) as info:
        find(Flat(), (torch.randn(64, 4), torch.randint(0, 3, (64,))))
    assert str(info.value) == (
        "the model you gave (Flat) outputs shape (2,) for a batch of 2 but class targets of "
        "shape (2,) need scores of shape (2, n_classes) for cross_entropy"
    )


def test_the_right_shapes_still_train(tmp_path, capsys):
    p = write(
        tmp_path,
        """
def data():
    x = torch.randn(64, 4)
    return (x, x.sum(1, keepdim=True)), (x[:16], x[:16].sum(1, keepdim=True))

def model():
    return nn.Linear(4, 1)

def loss():
    return nn.MSELoss()
""",
    )
    assert main(["lr-find", "--workload", str(p), "--iterations", "6", "--no-store"]) == 0
    assert "UserWarning" not in capsys.readouterr().err


# ------------------------------------------------------------------------------ optimizer()


@pytest.mark.parametrize(
    "returns, got",
    [
        ("[torch.optim.SGD(params, lr=lr)]", "got a list of 1"),
        ("None", "got None"),
        ("nn.Linear(4, 4)", "got Linear"),
        ("torch.optim.SGD", "got the class SGD"),
    ],
)
def test_an_optimizer_that_is_no_optimizer(tmp_path, capsys, returns, got):
    p = write(
        tmp_path,
        CLASSES_4
        + f"""
def model():
    return nn.Linear(4, 4)

def optimizer(params, lr):
    return {returns}
""",
    )
    err = cli(capsys, p)
    assert err == [
        "error: optimizer() in wl.py must return a torch.optim.Optimizer over the params it is "
        f"given (e.g. torch.optim.SGD(params, lr=lr)), {got}"
    ]


def test_an_optimizer_over_other_parameters(tmp_path, capsys):
    p = write(
        tmp_path,
        CLASSES_4
        + """
def model():
    return nn.Linear(4, 4)

def optimizer(params, lr):
    return torch.optim.SGD(nn.Linear(4, 4).parameters(), lr=lr)
""",
    )
    assert "returned an optimizer over other parameters than the model's" in cli(capsys, p)[0]


def test_the_api_refuses_an_optimizer_class_a_loss_and_a_metric_that_are_no_functions():
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    with pytest.raises(WorkloadError, match="optimizer must be a torch optimizer .* got the class"):
        find(nn.Linear(4, 2), (x, y), optimizer=torch.optim.SGD)
    with pytest.raises(WorkloadError, match=r"loss must be a function loss\(output, target\)"):
        find(nn.Linear(4, 2), (x, y), loss="cross_entropy")
    with pytest.raises(WorkloadError, match=r"metric must be a function"):
        find(nn.Linear(4, 2), (x, y), metric=0.5)


# --------------------------------------------------------------------------- a file that exits


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit(3)", "raise SystemExit", "exit(1)"])
def test_a_file_that_exits_while_it_loads(tmp_path, capsys, call):
    p = write(tmp_path, CLASSES_4 + f"\n{call}\n")
    with pytest.raises(WorkloadError, match=r"importing the workload failed in wl\.py, line \d+"):
        load_workload(p)
    err = cli(capsys, p)
    assert "a workload returns or raises, it never exits" in err[0]


@pytest.mark.parametrize("where", ["model", "data", "loss"])
def test_a_function_that_exits(tmp_path, capsys, where):
    functions = {
        "model": "def model():\n    return nn.Linear(4, 4)\n",
        "loss": "def loss():\n    return nn.functional.cross_entropy\n",
    }
    functions[where] = f"def {where}():\n    sys.exit(3)\n"
    body = ("" if where == "data" else CLASSES_4) + "\n" + "\n".join(functions.values())
    p = write(tmp_path, body)
    err = cli(capsys, p)
    assert err[0].startswith(f"error: {where}() failed in wl.py, line ")
    assert err[0].endswith("it called sys.exit(3); a workload returns or raises, it never exits")


def test_a_loss_that_exits_mid_training_is_one_line_not_an_exit(tmp_path, capsys):
    """The check's few calls pass; the exit comes later, inside the loop. It used to end the
    CLI with the file's own status (3) and nothing on stderr."""
    body = (
        CLASSES_4
        + """
def model():
    return nn.Linear(4, 4)

calls = [0]

def loss():
    def f(out, y):
        calls[0] += 1
        if calls[0] > 12:
            sys.exit(3)
        return nn.functional.cross_entropy(out, y)
    return f
"""
    )
    err = cli(capsys, write(tmp_path, body), "--iterations", "40")
    assert err[0].startswith("error: training failed in wl.py, line "), err
    assert err[0].endswith("it called sys.exit(3); a workload returns or raises, it never exits")


def test_a_forward_pass_that_exits_is_caught_by_the_check():
    class Quits(nn.Linear):
        def forward(self, x):
            sys.exit(4)

    with pytest.raises(WorkloadError, match=r"forward pass failed in .*it called sys\.exit\(4\)"):
        find(Quits(4, 2), (torch.randn(64, 4), torch.randint(0, 2, (64,))))


def test_keyboard_interrupt_is_left_to_the_user():
    class Interrupted(nn.Linear):
        def forward(self, x):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        find(Interrupted(4, 2), (torch.randn(64, 4), torch.randint(0, 2, (64,))))


def test_the_cli_process_says_why_a_file_exited(tmp_path):
    """It used to end with the file's own exit status (3) and nothing on stderr."""
    p = write(tmp_path, CLASSES_4 + "\nsys.exit(3)\n")
    proc = subprocess.run(
        [sys.executable, "-m", "lrbs", "lr-find", "--workload", str(p), "--no-store"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: importing the workload failed in wl.py, line 12: it ")


# ------------------------------------------------------------------------------ non-finite data


@pytest.mark.parametrize(
    "split, row, col, value, message",
    [
        ("train", 5, 2, "float('nan')", "the training data (an (x, y) pair): sample 5 holds NaN "),
        ("val", 3, 0, "float('inf')", "the validation data (an (x, y) pair): sample 3 holds inf "),
        (
            "train",
            60,
            3,
            "-float('inf')",
            "the training data (an (x, y) pair): sample 60 holds -inf",
        ),
    ],
)
def test_non_finite_data_in_memory_is_named_at_load(
    tmp_path, capsys, split, row, col, value, message
):
    p = write(
        tmp_path,
        f"""
def model():
    return nn.Linear(4, 4)

def data():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 4, (64,), generator=g)
    xv, yv = x[:16].clone(), y[:16]
    {"x" if split == "train" else "xv"}[{row}, {col}] = {value}
    return (x, y), (xv, yv)
""",
    )
    err = cli(capsys, p, "--data-path", "memory")
    assert err[0].startswith(f"error: data() in wl.py: {message}"), err
    assert f"at feature {col};" in err[0] and len(err) == 1


def test_a_nan_target_of_a_regression():
    x = torch.randn(64, 4)
    y = x.sum(1, keepdim=True)
    y[7, 0] = float("nan")
    with pytest.raises(LrbsError) as info:
        find(nn.Linear(4, 1), (x, y), loss=nn.functional.mse_loss)
    assert str(info.value).startswith(
        "the training data (an (x, y) pair): sample 7 has a NaN target"
    )


class Images(Dataset):
    """Image-like samples with one poisoned pixel; the model refuses to see it."""

    def __init__(self, bad: int) -> None:
        self.bad = bad

    def __len__(self) -> int:
        return 48

    def __getitem__(self, i):
        x = torch.full((1, 3, 3), float(i % 3))
        if i == self.bad:
            x[0, 1, 2] = float("inf")
        return {"image": x, "label": torch.tensor(i % 3)}


class Strict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(9, 3)

    def forward(self, x):
        if not torch.isfinite(x).all():
            raise AssertionError("the model saw a non-finite input")
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_inf_is_named_when_met_before_the_model_sees_it(workers):
    with pytest.raises(LrbsError) as info:
        find(
            Strict(),
            DataLoader(Images(bad=30), batch_size=8, num_workers=workers),
            data_path="stream",
            iterations=10,
            batch_size=8,
        )
    text = str(info.value)
    assert text.startswith(
        "the training data (a DataLoader of Images): sample 30 holds inf at feature (0, 1, 2) "
        "(met in batch "
    ), text


def test_streamed_nan_in_the_validation_set_is_named():
    train = Images(bad=-1)
    with pytest.raises(LrbsError) as info:
        find(Strict(), train, val=Images(bad=11), data_path="stream", follow="val")
    assert str(info.value).startswith(
        "the validation data (a Images): sample 11 holds inf at feature (0, 1, 2) (met in batch 1"
    )
