"""Write the text a tiny tokenizer should know: the toy dataset's words and LISA's templates.

    python -m tools.toy_corpus --dataset_dir dataset --output corpus.txt
    python -m tools.tiny_base --output_dir base --corpus corpus.txt

Collects every query, explanation, referring expression, LLaVA turn and class name of a toy
dataset tree (``python -m tools.toy_dataset``), plus the question and answer templates of
training and validation, one text per line, so that prompts tokenize into real pieces.
"""

from __future__ import annotations

import argparse
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

from tools.toy_dataset.classes import SEM_SEG_CLASS_OF_KIND
from utils.data import questions

TEXT_KEYS = {"text", "query", "outputs", "value", "sent", "raw", "name", "supercategory"}


def strings_under(value: object, keys: set[str], key: str | None = None) -> Iterator[str]:
    """Every string in a json/pickle structure stored under one of ``keys``."""
    if isinstance(value, dict):
        for child_key, child in value.items():
            yield from strings_under(child, keys, str(child_key))
    elif isinstance(value, list | tuple):
        for child in value:
            yield from strings_under(child, keys, key)
    elif isinstance(value, str) and key in keys:
        yield value


def dataset_texts(dataset_dir: Path) -> Iterator[str]:
    for path in sorted(dataset_dir.rglob("*")):
        if path.suffix == ".json" and path.name != "toy_dataset.json":
            yield from strings_under(json.loads(path.read_text(encoding="utf-8")), TEXT_KEYS)
        elif path.suffix == ".p":
            with path.open("rb") as file:
                yield from strings_under(pickle.load(file), TEXT_KEYS)


def template_texts() -> Iterator[str]:
    fills = {"class_name": "shape", "sent": "Which shape is it?"}
    for template in (*questions.SHORT_QUESTION_LIST, *questions.LONG_QUESTION_LIST):
        yield template.format(**fills)
    yield from questions.EXPLANATORY_QUESTION_LIST
    yield from questions.ANSWER_LIST
    yield from SEM_SEG_CLASS_OF_KIND.values()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tools.toy_corpus", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dataset_dir", required=True, help="a toy dataset tree")
    parser.add_argument("--output", required=True, help="text file to write")
    args = parser.parse_args(argv)
    dataset_dir = Path(args.dataset_dir)
    if not (dataset_dir / "toy_dataset.json").is_file():
        raise SystemExit(f"--dataset_dir: {dataset_dir} holds no toy dataset (toy_dataset.json)")
    lines = dict.fromkeys(
        line.strip()
        for text in (*template_texts(), *dataset_texts(dataset_dir))
        for line in text.splitlines()
        if line.strip()
    )
    Path(args.output).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} distinct lines -> {args.output}")


if __name__ == "__main__":
    main()
