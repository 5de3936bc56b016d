"""The Python API (LisaSegmenter) given arguments of the wrong type or value: a TypeError or
ValueError (InputError) whose message is one sentence naming the argument, raised before any
tensor work, and the segmenter keeps answering afterwards."""

import signal

import numpy as np
import pytest
import torch
from PIL import Image

from model.segmenter import InputError, InputTypeError

from .broken_files import fifo, link_loop, one_line, png_bomb

pytestmark = pytest.mark.reference
PROMPT = "Can you segment the red circle in this image?"


@pytest.fixture(scope="module")
def segmenter(load_reference_segmenter):
    return load_reference_segmenter(4, device="cpu")


@pytest.fixture(scope="module")
def image(tiny_cases_dir):
    return str(tiny_cases_dir / "img1.png")


# name -> (call(segmenter, image, folder), error type, a piece of the message)
CASES = {
    "prompt an int": (lambda s, i, d: s(i, 5), InputTypeError, "prompt must be a str, got int"),
    "prompt None": (lambda s, i, d: s(i), InputTypeError, "got NoneType"),
    "prompt bytes": (lambda s, i, d: s(i, b"hi"), InputTypeError, "got bytes"),
    "prompt a list": (lambda s, i, d: s.segment(i, ["hi"]), InputTypeError, "got list"),
    "prompt blank": (lambda s, i, d: s(i, "  "), InputError, "The prompt is empty."),
    "history a str": (
        lambda s, i, d: s(i, PROMPT, history="hello"),
        InputTypeError,
        "history must be a list of (user text, answer) pairs, got str",
    ),
    "history an int": (lambda s, i, d: s(i, PROMPT, history=3), InputTypeError, "got int"),
    "history a dict": (
        lambda s, i, d: s(i, PROMPT, history={"q": "a"}),
        InputTypeError,
        "got dict",
    ),
    "history turn of one": (
        lambda s, i, d: s(i, PROMPT, history=[("only",)]),
        InputTypeError,
        "history[0] must be a (user text, answer) pair",
    ),
    "history turn of three": (
        lambda s, i, d: s(i, PROMPT, history=[("q", "a", "x")]),
        InputTypeError,
        "history[0] must be a (user text, answer) pair",
    ),
    "history turn a str": (
        lambda s, i, d: s(i, PROMPT, history=[("q", "a"), "qa"]),
        InputTypeError,
        "history[1] must be a (user text, answer) pair",
    ),
    "history numbers": (
        lambda s, i, d: s(i, PROMPT, history=[(1, 2)]),
        InputTypeError,
        "history[0] must hold two str, got (int, int)",
    ),
    "history answer None": (
        lambda s, i, d: s.segment_fitting(i, PROMPT, history=[("q", None)]),
        InputTypeError,
        "got (str, NoneType)",
    ),
    "image a tensor": (
        lambda s, i, d: s(torch.zeros(3, 8, 8), PROMPT),
        InputTypeError,
        "got Tensor",
    ),
    "image an int": (lambda s, i, d: s(7, PROMPT), InputTypeError, "got int"),
    "image None": (lambda s, i, d: s(None, PROMPT), InputTypeError, "got NoneType"),
    "image path empty": (lambda s, i, d: s("", PROMPT), InputError, "The image path is empty."),
    "image float array": (
        lambda s, i, d: s(np.zeros((8, 8, 3)), PROMPT),
        InputError,
        "must be uint8",
    ),
    "image PIL empty": (
        lambda s, i, d: s(Image.new("RGB", (0, 5)), PROMPT),
        InputError,
        "0x5 pixels: empty",
    ),
    "image path a FIFO": (
        lambda s, i, d: s(fifo(d / "pipe.png"), PROMPT),
        InputError,
        "is a FIFO (named pipe), not a regular file",
    ),
    "image path a link loop": (
        lambda s, i, d: s(link_loop(d / "loop.png"), PROMPT),
        InputError,
        "is a loop of symbolic links",
    ),
    "image path a PNG bomb": (
        lambda s, i, d: s(png_bomb(d / "bomb.png"), PROMPT),
        InputError,
        "too large to decode safely",
    ),
    "max_new_tokens a str": (
        lambda s, i, d: s(i, PROMPT, max_new_tokens="4"),
        InputTypeError,
        "max_new_tokens must be an int, got str",
    ),
    "max_new_tokens a float": (
        lambda s, i, d: s(i, PROMPT, max_new_tokens=2.5),
        InputTypeError,
        "got float",
    ),
    "max_new_tokens negative": (
        lambda s, i, d: s(i, PROMPT, max_new_tokens=-1),
        InputError,
        "max_new_tokens must be 0 or more",
    ),
    "batch not a list": (
        lambda s, i, d: s.segment_batch(5),
        InputTypeError,
        "requests must be a list",
    ),
    "batch request not a tuple": (
        lambda s, i, d: s([5]),
        InputTypeError,
        "each request must be (image, prompt)",
    ),
    "batch request too short": (
        lambda s, i, d: s([(i,)]),
        InputTypeError,
        "each request must be (image, prompt)",
    ),
    "batch prompt an int": (
        lambda s, i, d: s([(i, PROMPT), (i, 3)]),
        InputTypeError,
        "prompt must be a str",
    ),
    "batch with history outside": (
        lambda s, i, d: s([(i, PROMPT)], history=[]),
        ValueError,
        "give each request's history inside its tuple",
    ),
}


def _no_hang(signum, frame):
    raise AssertionError("the call blocked (a reader opened a FIFO?)")


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_argument_is_one_sentence(segmenter, image, tmp_path, name):
    call, error_type, piece = CASES[name]
    previous = signal.signal(signal.SIGALRM, _no_hang)
    signal.alarm(60)
    try:
        with pytest.raises(error_type) as raised:
            call(segmenter, image, tmp_path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    one_line(str(raised.value), piece)
    assert isinstance(raised.value, TypeError | ValueError)


def test_the_segmenter_answers_after_the_mistakes(segmenter, image, tmp_path):
    for name in ("prompt an int", "history numbers", "image a tensor", "batch prompt an int"):
        call, error_type, _ = CASES[name]
        with pytest.raises(error_type):
            call(segmenter, image, tmp_path)
    result = segmenter(image, PROMPT, history=[["an earlier question", "an answer"]])
    assert isinstance(result.text, str) and result.num_tokens >= 1
    assert result.history[0] == ("an earlier question", "an answer")
