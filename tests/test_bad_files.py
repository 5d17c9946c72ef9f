"""Files and numbers a user gives that exist but cannot be used: each is one clear message
(an LrbsError), through the API and the CLI, never a traceback; and a model too large for
memory is refused before it is allocated."""

import gzip
import os
import pickle

import numpy as np
import pytest

from lrbs.cli import main
from lrbs.core.data import DataSpec, load
from lrbs.core.errors import LrbsError
from lrbs.core.models import ModelSpec, build_model
from lrbs.core.setup import Setup


def cli_error(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def write_idx_set(folder, truncated: str | None = None, garbage_gz: str | None = None):
    folder.mkdir(parents=True)
    shapes = {
        "train-images-idx3-ubyte": (30, 28, 28),
        "train-labels-idx1-ubyte": (30,),
        "t10k-images-idx3-ubyte": (10, 28, 28),
        "t10k-labels-idx1-ubyte": (10,),
    }
    for name, shape in shapes.items():
        head = bytes([0, 0, 8, len(shape)]) + b"".join(s.to_bytes(4, "big") for s in shape)
        body = np.zeros(int(np.prod(shape)), np.uint8).tobytes()
        if name == truncated:
            body = body[: len(body) // 2]
        data = head + body
        if name == garbage_gz:
            (folder / f"{name}.gz").write_bytes(b"\x1f\x8bnot really gzip")
        else:
            (folder / name).write_bytes(data)


def test_a_truncated_idx_file(tmp_path, capsys):
    write_idx_set(tmp_path / "MNIST" / "raw", truncated="train-images-idx3-ubyte")
    with pytest.raises(LrbsError, match="truncated"):
        load(DataSpec(name="mnist", root=str(tmp_path)))
    assert "truncated" in cli_error(
        capsys, "train", "--dataset", "mnist", "--data-root", str(tmp_path), "--steps", "1"
    )


def test_a_corrupt_gzipped_idx_file(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", garbage_gz="t10k-labels-idx1-ubyte")
    with pytest.raises(LrbsError, match="corrupt or truncated"):
        load(DataSpec(name="mnist", root=str(tmp_path)))


def test_a_corrupt_cifar_pickle(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = {"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 3]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(good)[:40])  # cut short
    (folder / "test_batch").write_bytes(pickle.dumps(good))
    with pytest.raises(LrbsError, match="corrupt or truncated"):
        load(DataSpec(name="cifar10", root=str(tmp_path)))
    assert "corrupt or truncated" in cli_error(
        capsys, "train", "--dataset", "cifar10", "--data-root", str(tmp_path), "--steps", "1"
    )


def test_a_csv_with_inf_a_folder_and_no_permission(tmp_path, capsys):
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,y\n1,2,0\ninf,3,1\n4,5,0\n6,7,1\n")
    with pytest.raises(LrbsError, match="infinite values in: a"):
        load(DataSpec(name="csv", csv_path=str(csv), target="y"))
    with pytest.raises(LrbsError, match="is a folder"):
        load(DataSpec(name="csv", csv_path=str(tmp_path), target="y"))
    if os.geteuid() != 0:  # root reads anything
        csv.chmod(0)
        with pytest.raises(LrbsError, match="no permission"):
            load(DataSpec(name="csv", csv_path=str(csv), target="y"))
    csv.chmod(0o644)
    assert "infinite" in cli_error(
        capsys, "train", "--dataset", "csv", "--csv", str(csv), "--target", "y", "--steps", "1"
    )


def test_seeds_out_of_range(capsys):
    with pytest.raises(LrbsError, match="seed must be at least 0"):
        Setup(seed=-1)
    with pytest.raises(LrbsError, match="seed must be at most"):
        Setup(seed=2**40)
    assert "seed must be at least 0" in cli_error(capsys, "train", "--seed", "-1")


def test_a_model_too_large_for_memory_is_refused_before_it_is_allocated(capsys):
    with pytest.raises(LrbsError, match="GiB, more than the"):
        build_model(ModelSpec(name="mlp", hidden=(200_000, 200_000)), (40,), 10)
    line = cli_error(capsys, "train", "--hidden", "200000", "200000", "--steps", "1")
    assert "parameters" in line and "choose fewer or smaller layers" in line


def test_gzip_of_garbage_is_not_a_traceback_in_idx_reading(tmp_path):
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08")  # too short to be an IDX header
    from lrbs.core.data import read_idx

    with pytest.raises(LrbsError):
        read_idx(path)
