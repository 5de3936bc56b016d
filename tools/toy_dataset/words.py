"""Small pieces of English shared by the toy queries, expressions and conversations."""

from __future__ import annotations

from collections.abc import Sequence

from tools.toy_dataset.scene import Scene, Shape

NUMBER_WORDS = {0: "no", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 10: "ten"}


def plural(kind: str) -> str:
    return f"{kind}s"


def with_article(noun_phrase: str) -> str:
    """``"a red circle"``, ``"an orange star"``."""
    return ("an " if noun_phrase[:1] in "aeiou" else "a ") + noun_phrase


def capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def listing(items: Sequence[str]) -> str:
    """``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def short_description(scene: Scene, shape: Shape) -> str:
    """``"circle"`` when its kind is unique in the scene, else ``"red circle"``."""
    same_kind = sum(other.kind == shape.kind for other in scene.shapes)
    return shape.kind if same_kind == 1 else shape.name
