"""A user's samples as users write them: (input, target, *rest) as tuples or lists, dicts with
known keys (`SAMPLE_CONVENTION`), DataLoaders with their own collate, on both data paths. The
oracle: the same samples given as a plain (x, y) pair of tensors give the same range test."""

import logging
import textwrap

import numpy as np
import pytest
import torch
from test_bad_files import cli_error
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lrbs
from lrbs.cli import main
from lrbs.core.errors import LrbsError
from lrbs.core.stream import INPUT_KEYS, SAMPLE_CONVENTION, TARGET_KEYS, pick_of

N = 96


def blobs(n: int = N, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 5, generator=g) * 3
    y = torch.randint(0, 3, (n,), generator=g)
    return centres[y] + torch.randn(n, 5, generator=g), y


X, Y = blobs()


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


class Samples(Dataset):
    """X, Y one sample at a time, in the form `make(x, y, i)` gives."""

    def __init__(self, make) -> None:
        self.make = make

    def __len__(self) -> int:
        return N

    def __getitem__(self, i):
        return self.make(X[i], Y[i], i)


FORMS = {
    "3-tuple": lambda x, y, i: (x, y, torch.tensor(i)),
    "4-list": lambda x, y, i: [x, y, f"name{i}", torch.zeros(2)],
    "2-list": lambda x, y, i: [x, y],
    "dict input/label": lambda x, y, i: {"input": x, "label": y, "id": i},
    "dict x/y": lambda x, y, i: {"y": y, "x": x},
    "dict image/labels": lambda x, y, i: {"labels": y, "image": x, "path": f"{i}.png"},
    "int target": lambda x, y, i: (x, int(y), 0.5),
}


def losses(train, **kw) -> np.ndarray:
    found = lrbs.find_lr(net(), train, iterations=8, batch_size=16, seed=3, **kw)
    assert found.status == "finished", found.message
    return found.curve().loss.to_numpy()


@pytest.fixture(scope="module")
def plain() -> np.ndarray:
    return losses((X, Y))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_sample_form_gives_the_plain_pairs_curve(form, plain):
    assert np.array_equal(losses(Samples(FORMS[form])), plain)


@pytest.mark.parametrize("form", ["3-tuple", "dict input/label", "4-list"])
def test_a_dataloader_of_those_samples_streamed_or_not(form, plain):
    loader = DataLoader(Samples(FORMS[form]), batch_size=16)
    assert np.array_equal(losses(loader), plain)
    np.testing.assert_allclose(losses(loader, data_path="stream"), plain, rtol=1e-5)


def dict_collate(samples):
    """A user's collate function yielding a dict batch with extras."""
    return {
        "inputs": torch.stack([s[0] for s in samples]),
        "targets": torch.stack([s[1] for s in samples]),
        "lengths": torch.full((len(samples),), 5),
    }


def triple_collate(samples):
    x = torch.stack([s[0] for s in samples])
    return x, torch.stack([s[1] for s in samples]), x.norm(dim=1)


@pytest.mark.parametrize("collate", [dict_collate, triple_collate])
@pytest.mark.parametrize("path", ["memory", "stream"])
def test_a_dataloader_whose_collate_yields_dicts_or_triples(collate, path, plain):
    loader = DataLoader(Samples(FORMS["2-list"]), batch_size=16, collate_fn=collate)
    np.testing.assert_allclose(losses(loader, data_path=path), plain, rtol=1e-5)


def test_a_tensor_dataset_with_a_third_tensor_streams_and_holds(plain):
    weights = torch.rand(N)
    ds = TensorDataset(X, Y, weights)
    assert np.array_equal(losses(ds), plain)
    np.testing.assert_allclose(losses(ds, data_path="stream"), plain, rtol=1e-5)


def test_the_ignored_fields_are_said_once(caplog):
    class Once(Samples):
        pass

    with caplog.at_level(logging.WARNING, logger="lrbs.core.stream"):
        losses(Once(FORMS["3-tuple"]))  # train and val are the same: one note
        losses(Once(FORMS["3-tuple"]))  # and not again
    notes = [r.getMessage() for r in caplog.records if "ignores the rest" in r.getMessage()]
    assert notes == [
        "the training data (a Once): a sample has 3 fields; lrbs reads the first as the "
        "input and the second as the target and ignores the rest"
    ]


def test_a_dict_note_names_the_keys_read_and_ignored(caplog):
    class Keyed(Samples):
        pass

    with caplog.at_level(logging.WARNING, logger="lrbs.core.stream"):
        losses(Keyed(FORMS["dict image/labels"]))
    assert "reads 'image' as the input and 'labels' as the target and ignores 'path'" in (
        caplog.text
    )


# ------------------------------------------------------------------- what cannot be read


class Unknown(Samples):
    def __init__(self) -> None:
        super().__init__(lambda x, y, i: {"features_": x, "answer": y})


class Lonely(Samples):
    def __init__(self) -> None:
        super().__init__(lambda x, y, i: (x,))


class Words(Samples):
    def __init__(self) -> None:
        super().__init__(lambda x, y, i: ("some text", y))


@pytest.mark.parametrize(
    "train, message",
    [
        (
            Unknown(),
            "the training data (a Unknown): a sample is a dict with keys 'features_', "
            "'answer' and no key lrbs reads as an input",
        ),
        (
            DataLoader(Unknown(), batch_size=8),
            "the training data (a DataLoader of Unknown): a sample is a dict",
        ),
        (Lonely(), "the training data (a Lonely): a sample must be (input, target), got a list"),
        (Words(), "the training data (a Words): the input of a batch must be a tensor, got tuple"),
        (
            DataLoader(Lonely(), batch_size=None),
            "the training data is a DataLoader with batch_size=None",
        ),
    ],
)
def test_samples_lrbs_cannot_read_are_one_line_naming_what_was_given(train, message):
    with pytest.raises(LrbsError) as info:
        lrbs.find_lr(net(), train, iterations=6, batch_size=8)
    text = str(info.value)
    assert text.startswith(message), text
    assert "\n" not in text and "data()" not in text and "Sequential" not in text


def test_the_refusal_of_a_dict_says_the_convention():
    with pytest.raises(LrbsError) as info:
        pick_of({"a": torch.zeros(2), "label": torch.zeros(2)}, "the training data (a D)")
    text = str(info.value)
    assert "no key lrbs reads as an input" in text and SAMPLE_CONVENTION in text
    assert all(repr(k) in text for k in INPUT_KEYS + TARGET_KEYS)


def test_a_validation_set_of_another_form_than_the_training_set(plain):
    """Each split is read by its own convention: dict training samples, (x, y) validation."""
    found = lrbs.find_lr(
        net(),
        Samples(FORMS["dict x/y"]),
        val=(X[:32], Y[:32]),
        iterations=8,
        batch_size=16,
        seed=3,
        follow="val",
    )
    assert found.status == "finished" and len(found.curve()) > 0


# ---------------------------------------------------------------------------- a workload file

WORKLOAD = """
import torch
from torch import nn
from torch.utils.data import Dataset, DataLoader

class Rows(Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 2, (n,), generator=g)
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return SAMPLE

def model():
    return nn.Linear(4, 2)

def data():
    return DataLoader(Rows(64, 0), batch_size=16), Rows(32, 1)
"""


@pytest.mark.parametrize(
    "sample",
    [
        "self.x[i], self.y[i], i",
        "[self.x[i], self.y[i], 'a', 'b']",
        "{'inputs': self.x[i], 'targets': self.y[i], 'mask': 1}",
    ],
)
@pytest.mark.parametrize("path", ["memory", "stream"])
def test_a_workload_file_of_such_samples_runs_through_the_cli(tmp_path, capsys, sample, path):
    wl = tmp_path / "rows.py"
    wl.write_text(textwrap.dedent(WORKLOAD).replace("SAMPLE", sample))
    argv = ["lr-find", "--workload", str(wl), "--iterations", "6", "--batch-size", "16"]
    assert main([*argv, "--data-path", path, "--no-store", "--json"]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_workload_file_with_unknown_keys_names_the_file(tmp_path, capsys):
    wl = tmp_path / "keys.py"
    wl.write_text(textwrap.dedent(WORKLOAD).replace("SAMPLE", "{'a': self.x[i], 'b': self.y[i]}"))
    err = cli_error(capsys, "lr-find", "--workload", str(wl), "--iterations", "6", "--no-store")
    assert err.startswith(
        "error: data() in keys.py: the training data (a DataLoader of Rows): a sample is a dict "
        "with keys 'a', 'b'"
    )
