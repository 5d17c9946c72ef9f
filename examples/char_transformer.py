"""A small character-level transformer language model, trained with AdamW on Python's own source.

Corpus: the Python standard library's top-level `.py` files (every machine with Python has
them), in sorted order, concatenated up to 1,000,000 characters; characters outside ASCII
become "?", so the vocabulary is the 128 ASCII codes. The first 90 % trains, the rest
validates. A sample is a block of 64 characters and the 64 that follow each of them (the
same block shifted by one); blocks do not overlap.

Model: token and position embeddings, 2 pre-norm transformer layers (`nn.TransformerEncoderLayer`,
width 64, 4 heads, GELU) with a causal mask, a final LayerNorm and a linear head: output
[batch, 64, 128] logits. `loss()` flattens them for cross-entropy over the vocabulary;
`metric()` is next-character accuracy. `optimizer(params, lr)` is AdamW with betas
(0.9, 0.95) and two parameter groups, as nanoGPT: weight decay 0.1 on the weight matrices
and embeddings, none on biases and LayerNorm gains.

Cost: 120,000 parameters; a step at batch 32 is about 0.13 CPU-seconds. The range test
suggests about 0.015 (valley), and 150 steps at batch 32 from there reach a validation loss
near 2.2 (from ln 128 = 4.85); the README has the table at a third and three times that rate.

    python -m lrbs lr-find --workload examples/char_transformer.py --json
    python -m lrbs train --workload examples/char_transformer.py --lr 0.015 --steps 150
"""

import functools
import sysconfig
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

BLOCK = 64  # characters of context
VOCAB = 128  # ASCII
WIDTH, HEADS, LAYERS = 64, 4, 2
MAX_CHARS = 1_000_000


class CharLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Embedding(BLOCK, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH,
            HEADS,
            4 * WIDTH,
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, VOCAB)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(BLOCK))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, T, VOCAB]
        t = ids.shape[1]
        h = self.tokens(ids) + self.positions(torch.arange(t, device=ids.device))
        h = self.blocks(h, mask=self.causal[:t, :t], is_causal=True)
        return self.head(self.norm(h))


class Blocks(Dataset):
    """(64 characters, the 64 characters one further on) from a 1-D tensor of codes."""

    def __init__(self, codes: torch.Tensor) -> None:
        self.codes = codes

    def __len__(self) -> int:
        return (len(self.codes) - 1) // BLOCK

    def __getitem__(self, i: int):
        chunk = self.codes[i * BLOCK : (i + 1) * BLOCK + 1]
        return chunk[:-1], chunk[1:]


@functools.cache
def corpus() -> str:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    parts, size = [], 0
    for f in files:
        parts.append(f.read_text(encoding="utf-8", errors="replace"))
        size += len(parts[-1])
        if size >= MAX_CHARS:
            break
    return "".join(parts)[:MAX_CHARS].encode("ascii", errors="replace").decode("ascii")


def model() -> nn.Module:
    return CharLM()


def data():
    codes = torch.frombuffer(bytearray(corpus().encode("ascii")), dtype=torch.uint8).long()
    split = int(0.9 * len(codes))
    return Blocks(codes[:split]), Blocks(codes[split:])


def loss():
    def next_char_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())

    return next_char_cross_entropy


def optimizer(params, lr: float) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95))


def metric(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Next-character accuracy."""
    return float((logits.argmax(-1) == target).float().mean())
