"""The question and answer templates LISA trains and validates with (facts of the original).

Every training question starts with the image placeholder and a newline. ``{class_name}`` is a
class name or a referring expression (lower-cased by the readers), ``{sent}`` a ReasonSeg
sentence. Validation writes its questions differently (a space after the newline); see
:func:`validation_question`.
"""

from __future__ import annotations

import numpy as np

from utils.constants import DEFAULT_IMAGE_TOKEN, SEG_TOKEN

# Semantic segmentation, referring segmentation and short ReasonSeg queries.
SHORT_QUESTION_LIST: tuple[str, ...] = (
    DEFAULT_IMAGE_TOKEN + "\n" + "Can you segment the {class_name} in this image?",
    DEFAULT_IMAGE_TOKEN + "\n" + "Please segment the {class_name} in this image.",
    DEFAULT_IMAGE_TOKEN
    + "\n"
    + "What is {class_name} in this image? Please respond with segmentation mask.",
    DEFAULT_IMAGE_TOKEN
    + "\n"
    + "What is {class_name} in this image? Please output segmentation mask.",
)

# ReasonSeg queries written as sentences (``is_sentence`` true).
LONG_QUESTION_LIST: tuple[str, ...] = (
    DEFAULT_IMAGE_TOKEN + "\n" + "{sent} Please respond with segmentation mask.",
    DEFAULT_IMAGE_TOKEN + "\n" + "{sent} Please output segmentation mask.",
)

# Appended to a ReasonSeg query when the answer carries an explanation.
EXPLANATORY_QUESTION_LIST: tuple[str, ...] = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)

ANSWER_LIST: tuple[str, ...] = (
    f"It is {SEG_TOKEN}.",
    f"Sure, {SEG_TOKEN}.",
    f"Sure, it is {SEG_TOKEN}.",
    f"Sure, the segmentation result is {SEG_TOKEN}.",
    f"{SEG_TOKEN}.",
)

# Validation asks one fixed question per expression and expects this answer.
VALIDATION_ANSWER = f"{SEG_TOKEN}."


def validation_question(text: str, is_sentence: bool) -> str:
    """The user message of LISA's ValDataset for one query.

    The original writes a space after the newline (``"<image>\\n What is ..."``), unlike the
    training templates; the released models were evaluated that way, so it is kept.
    """
    if is_sentence:
        return f"{DEFAULT_IMAGE_TOKEN}\n {text} Please output segmentation mask."
    return f"{DEFAULT_IMAGE_TOKEN}\n What is {text} in this image? Please output segmentation mask."


def choose(options: tuple[str, ...], rng: np.random.Generator) -> str:
    """One template, uniformly at random."""
    return options[int(rng.integers(len(options)))]


def segmentation_questions(text: str, is_sentence: bool) -> tuple[str, ...]:
    """Every wording of the training question asking for the mask of ``text``: the long templates
    around a ReasonSeg sentence, the short ones around a lower-cased class name or phrase."""
    if is_sentence:
        return tuple(template.format(sent=text) for template in LONG_QUESTION_LIST)
    return tuple(template.format(class_name=text.lower()) for template in SHORT_QUESTION_LIST)


def short_question_turn(
    class_name: str, rng: np.random.Generator, answers: tuple[str, ...] = ANSWER_LIST
) -> tuple[str, str]:
    """(question, answer) asking for the mask of a class name or short expression.

    The name is lower-cased as the original does for every short question; the answer is one
    of ``answers`` (templates holding one ``[SEG]``).
    """
    return choose(segmentation_questions(class_name, False), rng), choose(answers, rng)


def parse_answer_templates(value: str) -> tuple[str, ...]:
    """``--answer_templates``: templates joined by '||' (empty: the original's ANSWER_LIST).

    Raises ValueError naming the flag when a template does not hold exactly one [SEG].
    """
    if not value.strip():
        return ANSWER_LIST
    templates = tuple(t.strip() for t in value.split("||") if t.strip())
    for template in templates:
        if template.count(SEG_TOKEN) != 1:
            raise ValueError(f"--answer_templates: {template!r} must hold {SEG_TOKEN} exactly once")
    return templates
