import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from lrbs.core.data import DEBIAN_FASHION, DataSpec, TensorData, availability, load, read_idx
from lrbs.core.errors import ConfigError, DataUnavailable


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)


def write_mnist_like(folder: Path, n_train=30, n_test=12, compress=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    sets = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", labels, compress)
        sets[split] = (images, labels)
    return sets


def check_split(a, n_train, n_val, shape, classes):
    assert a.x_train.shape == (n_train, *shape) and a.x_val.shape == (n_val, *shape)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert a.n_classes == classes and a.input_shape == shape
    assert set(np.unique(a.y_train)) <= set(range(classes))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_a_torchvision_root(tmp_path, compress):
    sets = write_mnist_like(tmp_path / "MNIST" / "raw", compress=compress)
    a = load(DataSpec("mnist", root=str(tmp_path)))
    check_split(a, 30, 12, (1, 28, 28), 10)
    np.testing.assert_array_equal(a.y_val, sets["t10k"][1])
    # standardised from the training split: the pixel order survives
    raw = sets["train"][0][:, None].astype(np.float32) / 255
    assert np.corrcoef(raw.ravel(), a.x_train.ravel())[0, 1] == pytest.approx(1, abs=1e-6)
    assert abs(a.x_train.mean()) < 1e-4 and a.x_train.std() == pytest.approx(1, abs=1e-3)


def test_fashion_mnist_from_a_torchvision_root(tmp_path):
    write_mnist_like(tmp_path / "FashionMNIST" / "raw", compress=True)
    a = load(DataSpec("fashion-mnist", root=str(tmp_path)))
    check_split(a, 30, 12, (1, 28, 28), 10)
    assert a.class_names[0] == "T-shirt/top"


def test_subset_of_a_real_set_keeps_the_validation_split(tmp_path):
    write_mnist_like(tmp_path / "MNIST" / "raw", n_train=50)
    a = load(DataSpec("mnist", root=str(tmp_path), size=20))
    assert a.n_train == 20 and len(a.y_val) == 12


def test_truncated_idx_file_is_reported(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(DataUnavailable, match="truncated"):
        read_idx(p)


def test_cifar10_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("data_batch_1", 8), ("data_batch_2", 8), ("test_batch", 6)):
        d = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, n)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    a = load(DataSpec("cifar10", root=str(tmp_path)))
    assert a.x_train.shape == (16, 3, 32, 32) and a.x_val.shape == (6, 3, 32, 32)
    assert a.class_names[3] == "c3"
    # per-channel standardisation
    means = a.x_train.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(means, 0, atol=1e-4)


def test_covertype_from_scikit_learns_cache(tmp_path, monkeypatch):
    import joblib

    home = tmp_path / "covertype"
    home.mkdir()
    rng = np.random.default_rng(2)
    joblib.dump(rng.normal(size=(50, 54)), home / "samples_py3")
    joblib.dump(rng.integers(1, 8, 50), home / "targets_py3")
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    assert availability()["covertype"]
    a = load(DataSpec("covertype"))
    check_split(a, 40, 10, (54,), a.n_classes)
    assert a.y_train.min() >= 0  # classes 1..7 shifted to 0..6


@pytest.mark.parametrize("name", ["mnist", "cifar10", "fashion-mnist"])
def test_absent_dataset_says_how_to_get_it(tmp_path, name, monkeypatch):
    monkeypatch.setattr("lrbs.core.data.DEBIAN_FASHION", tmp_path / "nothing")
    with pytest.raises(DataUnavailable, match="not found"):
        load(DataSpec(name, root=str(tmp_path)))
    assert availability({"root": str(tmp_path)})[name] is False


def test_absent_covertype(tmp_path, monkeypatch):
    monkeypatch.setenv("SCIKIT_LEARN_DATA", str(tmp_path))
    with pytest.raises(DataUnavailable, match="covertype-synthetic"):
        load(DataSpec("covertype"))


def test_mnist1d_is_generated_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # get_dataset() would write a pickle here; make_dataset must not
    a = load(DataSpec("mnist1d", size=500))
    check_split(a, 400, 100, (1, 40), 10)
    assert list(tmp_path.iterdir()) == []
    b = load(DataSpec("mnist1d", size=500))
    np.testing.assert_array_equal(a.x_train, b.x_train)


def test_digits_and_synthetic_covertype():
    d = load(DataSpec("digits"))
    check_split(d, 1438, 359, (1, 8, 8), 10)
    c = load(DataSpec("covertype-synthetic", size=2000))
    check_split(c, 1600, 400, (54,), 7)
    counts = c.class_counts()
    assert counts[1] > counts[0] > counts[2] > counts[3]  # covertype's unbalanced classes
    np.testing.assert_allclose(c.x_train.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(c.x_train.std(0), 1, atol=1e-3)


@pytest.mark.skipif(not DEBIAN_FASHION.exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian(monkeypatch, tmp_path):
    monkeypatch.setenv("LRBS_DATA_ROOT", str(tmp_path))
    a = load(DataSpec("fashion-mnist"))
    check_split(a, 60000, 10000, (1, 28, 28), 10)
    np.testing.assert_array_equal(a.class_counts(), [6000] * 10)


def test_tensors_on_the_device():
    a = load(DataSpec("digits"))
    t = TensorData.from_arrays(a, "cpu")
    assert t.n_train == a.n_train and t.x_train.dtype.is_floating_point
    assert t.y_train.dtype == torch.int64
    assert torch.equal(t.y_val, torch.from_numpy(a.y_val))


# ---------------------------------------------------------------------------- CSV


def csv(tmp_path, text: str | bytes) -> str:
    p = tmp_path / "data.csv"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(p)


def test_csv_good(tmp_path):
    rows = "\n".join(f"{i},{i % 3 * 2.5},{'ab'[i % 2]},{'xyz'[i % 3]}" for i in range(30))
    path = csv(tmp_path, "f1,f2,name,label\n" + rows)
    a = load(DataSpec("csv", csv_path=path, target="label"))
    assert a.n_classes == 3 and a.input_shape == (2,)
    assert a.class_names == ("x", "y", "z")
    assert "ignored non-numeric columns: name" in a.notes[0]


@pytest.mark.parametrize(
    "content, target, message",
    [
        ("", "y", "empty"),
        ("a,b,y\n", "y", "no rows"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00", "y", "not a text CSV|could not be read"),
        ('a,b\n"1,2\n3,4,5,6,7\n', "b", "could not be read as CSV|missing values"),
        ("a,b,y\nq,w,1\nr,t,2\n", "y", "no numeric feature columns"),
        ("a,b,y\n1,,1\n2,3,2\n", "y", "missing values in: b"),
        ("a,b,y\n1,2,1\n2,3,1\n", "y", "single class"),
        ("a,b,y\n1,2,1\n2,3,0\n", "label", "target column 'label' is not in the CSV"),
    ],
)
def test_csv_bad(tmp_path, content, target, message):
    with pytest.raises(ConfigError, match=message):
        load(DataSpec("csv", csv_path=csv(tmp_path, content), target=target))


def test_unknown_dataset():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        DataSpec("imagenet")


def test_generated_mnist1d_is_kept_on_disk_and_equals_a_fresh_generation(tmp_path, monkeypatch):
    from mnist1d.data import get_dataset_args, make_dataset

    from lrbs.core import data as data_mod

    monkeypatch.setenv("LRBS_CACHE", str(tmp_path))
    first = load(DataSpec("mnist1d", size=300, seed=1))
    (kept,) = tmp_path.glob("mnist1d-*-300-43.npz")
    again = load(DataSpec("mnist1d", size=300, seed=1))
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(first.y_val, again.y_val)
    args = get_dataset_args()
    args.num_samples, args.seed = 300, 43
    oracle = make_dataset(args)  # the package itself, no lrbs in between
    cached = data_mod._mnist1d_arrays(300, 43)
    for k in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(cached[k], np.asarray(oracle[k])), k
    kept.write_bytes(b"not an npz")  # a damaged file is made again, not trusted
    third = load(DataSpec("mnist1d", size=300, seed=1))
    assert np.array_equal(first.x_train, third.x_train)
