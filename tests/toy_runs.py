"""What the end-to-end tests of the scripts share: a toy dataset and a tiny base on disk (sizes
from tools.tiny_configs), the flags and the model that name that base."""

from __future__ import annotations

from pathlib import Path

from model.builder import build_lisa
from model.LISA import LISAForCausalLM
from tools.tiny_base import TinyBaseSizes, build_tiny_base
from tools.toy_dataset import make_toy_dataset
from utils.tokenization import LegacyLlamaTokenizer, load_tokenizer

# Images and annotations per split of a toy dataset that is read, not learnt from.
SMALL_TOY = dict(seed=0, num_train=4, num_val=2, num_test=1, num_refer=6, num_sem_seg=4)
# What the tiny tokenizer learns (anything else falls back to bytes).
CORPUS = "Please segment the red circle."


def make_toy_inputs(
    root: Path, sizes: TinyBaseSizes, corpus: str = CORPUS, **toy_counts: int
) -> tuple[Path, dict[str, Path]]:
    """``root/dataset`` (:data:`SMALL_TOY`, ``toy_counts`` replacing some) and ``root/base``;
    returns the dataset folder and :func:`build_tiny_base`'s paths."""
    dataset = root / "dataset"
    make_toy_dataset(dataset, **{**SMALL_TOY, **toy_counts})
    return dataset, build_tiny_base(root / "base", [corpus], sizes)


def base_flags(base: dict[str, Path], version: Path | None = None) -> list[str]:
    """--version, --vision-tower and --vision_pretrained of a tiny base (--version ``version``
    when given: a model trained from it)."""
    return [
        f"--version={version or base['version']}",
        f"--vision-tower={base['vision_tower']}",
        f"--vision_pretrained={base['vision_pretrained']}",
    ]


def lisa_of_base(base: dict[str, Path], **settings) -> tuple[LISAForCausalLM, LegacyLlamaTokenizer]:
    """LISA built from a tiny base as train_ds.py builds it (``settings``: build_lisa's), and
    the base's tokenizer with LISA's tokens added."""
    tokenizer = load_tokenizer(base["version"])
    model = build_lisa(
        str(base["version"]),
        tokenizer,
        vision_tower=str(base["vision_tower"]),
        vision_pretrained=str(base["vision_pretrained"]),
        **settings,
    )
    return model, tokenizer
