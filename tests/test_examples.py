"""The example workloads in examples/: each file's contract (model, data, loss, optimizer,
metric) in plain torch, a few hand-written training steps lowering the loss, and, where the
engine's workload loader is present, a range test through the CLI on each."""

import importlib.util
import json

import pytest
import torch
from support import ROOT
from torch import nn
from torch.utils.data import DataLoader, Dataset

EXAMPLES = ROOT / "examples"
NAMES = ("resnet18_cifar", "regression_mse", "char_transformer", "pytorch_mnist_cnn")


def load(name: str):
    """The example file as a fresh module (each reads its environment when loaded)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def small_images(tmp_path, monkeypatch):
    """The ResNet example on 40 generated training images under a fresh data root."""
    monkeypatch.setenv("LRBS_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("LRBS_EXAMPLE_IMAGES", "40")
    return tmp_path


def first_batch(part, n: int):
    if isinstance(part, tuple):
        return part[0][:n], part[1][:n]
    return next(iter(DataLoader(part, batch_size=n, shuffle=False)))


def steps_lower_the_loss(module, x, y, lr: float, steps: int = 5) -> tuple[float, float]:
    """Plain torch: `steps` updates on one fixed batch; the loss on that batch before, after."""
    torch.manual_seed(0)
    model = module.model()
    loss_fn = module.loss() if hasattr(module, "loss") else nn.CrossEntropyLoss()
    make = getattr(module, "optimizer", lambda p, lr: torch.optim.Adam(p, lr=lr))
    opt = make(model.parameters(), lr)
    losses = []
    for _ in range(steps + 1):
        loss = loss_fn(model(x), y)
        assert loss.dim() == 0
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]


def test_every_example_has_a_docstring_and_the_two_required_factories():
    for name in NAMES:
        text = (EXAMPLES / f"{name}.py").read_text()
        assert text.startswith('"""'), name
        assert "\ndef model(" in text and "\ndef data(" in text, name


def test_resnet_generated_images_are_an_imagefolder_written_once_and_deterministic(
    small_images, tmp_path_factory, monkeypatch
):
    from torchvision.datasets import ImageFolder

    ex = load("resnet18_cifar")
    train, val = ex.data()
    assert isinstance(train, ImageFolder) and isinstance(val, ImageFolder)  # streamed from disk
    assert (len(train), len(val)) == (40, 10)
    assert train.classes == [f"class{k}" for k in range(10)]
    folders = list(small_images.iterdir())
    assert [f.name for f in folders] == ["lrbs-example-images32-seed0-40"]  # no temp left
    stamp = {p: p.stat().st_mtime_ns for p in folders[0].rglob("*.png")}
    ex.data()  # a second call reads the same files, writes nothing
    assert {p: p.stat().st_mtime_ns for p in folders[0].rglob("*.png")} == stamp

    other = tmp_path_factory.mktemp("again")  # the same seed elsewhere: the same images
    monkeypatch.setenv("LRBS_DATA_ROOT", str(other))
    again, _ = load("resnet18_cifar").data()
    for i in (0, 17, 39):
        assert torch.equal(train[i][0], again[i][0]) and train[i][1] == again[i][1]
    x, y = train[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0  # class0 first


def test_resnet_images_carry_their_class():
    """The generated classes are learnable: each image is nearer its own class's mean image
    (in colour) than any other's, for most images. An independent check of the generator."""
    import numpy as np

    ex = load("resnet18_cifar")
    rng = np.random.default_rng(0)
    imgs = np.stack([ex.draw(rng, k % 10) for k in range(400)]).astype(np.float32)
    labels = np.arange(400) % 10
    colour = imgs.std(axis=(1, 2))  # the stripes' amplitude per channel: the class's colour
    colour /= np.linalg.norm(colour, axis=1, keepdims=True)
    means = np.stack([colour[labels == k].mean(0) for k in range(10)])
    nearest = np.linalg.norm(colour[:, None] - means[None], axis=2).argmin(1)
    assert (nearest == labels).mean() > 0.3  # chance is 0.1; noise hides the weakest stripes


def test_resnet_model_and_a_few_steps(small_images):
    ex = load("resnet18_cifar")
    model = ex.model()
    assert sum(p.numel() for p in model.parameters()) > 11_000_000  # ResNet-18, not a toy
    train, _ = ex.data()
    x, y = first_batch(train, 16)
    assert model(x).shape == (16, 10)
    before, after = steps_lower_the_loss(ex, x, y, lr=1e-3, steps=4)
    assert after < before


def test_regression_contract_and_standardised_targets():
    ex = load("regression_mse")
    (x, y), (xv, yv) = ex.data()
    assert x.shape == (353, 10) and y.shape == (353, 1) and xv.shape == (89, 10)
    assert y.dtype == torch.float32  # a regression target, not class labels
    assert torch.allclose(x.mean(0), torch.zeros(10), atol=1e-5)
    assert abs(y.mean().item()) < 1e-5 and abs(y.std().item() - 1) < 1e-5
    (x2, y2), _ = ex.data()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    model = ex.model()
    assert model(x).shape == y.shape
    assert isinstance(ex.loss(), nn.MSELoss)
    assert ex.metric(y, y) == pytest.approx(1.0)
    assert ex.metric(torch.zeros_like(y), y) == pytest.approx(0.0, abs=1e-5)  # the mean: R² 0
    before, after = steps_lower_the_loss(ex, x, y, lr=1e-2, steps=20)
    assert after < 0.8 * before


def test_char_transformer_data_are_shifted_blocks_of_the_stdlib_source():
    ex = load("char_transformer")
    train, val = ex.data()
    assert isinstance(train, Dataset) and not isinstance(train, tuple)
    assert len(train) > 10_000 and len(val) > 1_000
    x, y = train[5]
    assert x.shape == y.shape == (64,) and x.dtype == torch.long
    assert torch.equal(x[1:], y[:-1])  # the target is the context shifted by one
    x6, _ = train[6]
    assert y[-1] == x6[0]  # blocks follow each other
    text = ex.corpus()
    assert "".join(map(chr, x.tolist())) == text[5 * 64 : 6 * 64]
    assert int(max(text.encode("ascii"))) < ex.VOCAB
    again, _ = load("char_transformer").data()
    assert torch.equal(again[123][0], train[123][0])


def test_char_transformer_is_causal_and_its_loss_flattens_the_logits():
    ex = load("char_transformer")
    torch.manual_seed(0)
    model = ex.model().eval()
    x = torch.randint(0, 128, (2, 64))
    out = model(x)
    assert out.shape == (2, 64, 128)
    changed = x.clone()
    changed[:, 40:] = (changed[:, 40:] + 1) % 128
    with torch.no_grad():  # a change at position 40 leaves the logits before it alone
        torch.testing.assert_close(model(changed)[:, :40], model(x)[:, :40])
        assert not torch.allclose(model(changed)[:, 40:], model(x)[:, 40:])
    y = torch.randint(0, 128, (2, 64))
    loss = ex.loss()(out, y)
    expected = nn.functional.cross_entropy(out.reshape(-1, 128), y.reshape(-1))
    assert loss.dim() == 0 and loss.item() == pytest.approx(expected.item())
    assert loss.item() == pytest.approx(torch.log(torch.tensor(128.0)).item(), rel=0.2)
    assert ex.metric(out, out.argmax(-1)) == 1.0


def test_char_transformer_adamw_has_decay_and_no_decay_groups():
    ex = load("char_transformer")
    model = ex.model()
    opt = ex.optimizer(model.parameters(), 3e-4)
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0
    assert decay["lr"] == no_decay["lr"] == 3e-4
    grouped = {id(p) for g in opt.param_groups for p in g["params"]}
    assert grouped == {id(p) for p in model.parameters()}
    assert all(p.dim() == 1 for p in no_decay["params"])  # biases and LayerNorm gains
    assert id(model.head.weight) in {id(p) for p in decay["params"]}


def test_char_transformer_a_few_adamw_steps_lower_the_loss():
    ex = load("char_transformer")
    train, _ = ex.data()
    x, y = first_batch(train, 16)
    before, after = steps_lower_the_loss(ex, x, y, lr=3e-3, steps=5)
    assert after < before - 0.5


def readme_workload(tmp_path):
    """The complete workload file the README shows, written out as a user would save it."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own model and data") :]
    block = section[section.index("```python\n") + len("```python\n") :]
    path = tmp_path / "my_workload.py"
    path.write_text(block[: block.index("```")])
    return path


def test_the_readme_workload_keeps_the_contract(tmp_path):
    spec = importlib.util.spec_from_file_location("my_workload", readme_workload(tmp_path))
    ex = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ex)
    for name in ("model", "data", "loss", "optimizer", "metric"):
        assert callable(getattr(ex, name)), name
    (x, y), (xv, yv) = ex.data()
    assert len(x) == 1400 and len(xv) == 397 and y.dtype == torch.long
    before, after = steps_lower_the_loss(ex, x, y, lr=0.05, steps=20)
    assert after < before
    assert 0 <= ex.metric(ex.model()(xv), yv) <= 1


@pytest.fixture
def idx_images(tmp_path, monkeypatch):
    """Four IDX files (gzipped, MNIST's layout) of 60 training and 12 test images under
    <root>/MNIST/raw/: image i is filled with the value 4 * i, labelled i % 10."""
    import gzip
    import struct

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in (("train", 60), ("t10k", 12)):
        pixels = bytes(4 * i for i in range(n) for _ in range(28 * 28))
        header = struct.pack(">IIII", 2051, n, 28, 28)
        (raw / f"{stem}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels))
        labels = struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))
        (raw / f"{stem}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    monkeypatch.setenv("LRBS_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("LRBS_EXAMPLE_IMAGES", "60")
    return tmp_path


def test_the_pytorch_example_cnn_reads_idx_files_and_keeps_its_own_optimizer_and_loss(
    idx_images,
):
    ex = load("pytorch_mnist_cnn")
    (x, y), (xv, yv) = ex.data()
    assert x.shape == (60, 1, 28, 28) and len(xv) == 10 and y.dtype == torch.int64
    # the pixels come back in order, normalised by the script's constants
    assert torch.allclose(x[3, 0, 0, 0], torch.tensor((12 / 255 - 0.1307) / 0.3081))
    assert y.tolist()[:12] == [i % 10 for i in range(12)]
    model = ex.model()
    # the example's network: conv 1-32 and 32-64 (3x3), fc 9216-128 and 128-10
    assert sum(p.numel() for p in model.parameters()) == 320 + 18_496 + 1_179_776 + 1_290
    model.eval()
    logp = model(x[:4])
    assert torch.allclose(logp.exp().sum(1), torch.ones(4), atol=1e-5)
    assert ex.loss() is torch.nn.functional.nll_loss
    assert isinstance(ex.optimizer(model.parameters(), 1.0), torch.optim.Adadelta)
    before, after = steps_lower_the_loss(ex, x[:32], y[:32], lr=1.0, steps=5)
    assert after < before


def test_the_pytorch_example_cnn_says_where_to_put_its_data(tmp_path, monkeypatch):
    monkeypatch.setenv("LRBS_DATA_ROOT", str(tmp_path))
    ex = load("pytorch_mnist_cnn")
    monkeypatch.setattr(ex, "folders", lambda: [tmp_path / "MNIST" / "raw"])
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        ex.data()


# -- through lrbs (needs the engine's workload loader)


@pytest.mark.parametrize(
    "name, flags",
    [
        ("regression_mse", ("--iterations", "40", "--batch-size", "32")),
        ("char_transformer", ("--iterations", "15", "--batch-size", "8")),
        ("resnet18_cifar", ("--iterations", "8", "--batch-size", "8", "--data-path", "stream")),
        ("pytorch_mnist_cnn", ("--iterations", "10", "--batch-size", "8")),
        ("README", ("--iterations", "30")),
    ],
)
def test_lr_find_gives_a_suggestion_on_every_example(name, flags, small_images, idx_images, capsys):
    """`python -m lrbs lr-find --workload examples/<name>.py --json`, in this process (and on
    the README's workload)."""
    pytest.importorskip("lrbs.core.workload")
    from lrbs.cli import main

    path = readme_workload(small_images) if name == "README" else EXAMPLES / f"{name}.py"
    argv = ["lr-find", "--workload", str(path), "--json", "--no-store"]
    code = main([*argv, *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = json.loads(captured.out)
    assert out["status"] == "finished", out.get("message")
    suggestions = out["suggestions"]
    assert all(lr is None or lr > 0 for lr in suggestions.values())
    # a sweep this short may see no real descent: then it says so instead of guessing
    assert any(lr is not None for lr in suggestions.values()) or "no suggestion" in out.get(
        "no_suggestion", ""
    )
