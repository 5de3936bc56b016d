"""chat.py with the tiny reference checkpoint: one-shot mode, and the interactive loop driven
through a real pseudo-terminal (bad inputs, multi-turn, EOF and Ctrl-C)."""

import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import chat
from utils.mask_rle import decode_rle

REPO = Path(__file__).resolve().parents[1]
RED_CIRCLE = "Can you segment the red circle in this image?"


@pytest.fixture(scope="module")
def model_args(tiny_lisa_dir):
    return ["--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]


@pytest.fixture(scope="module")
def expected_answer(tiny_lisa_dir, tiny_cases_dir):
    """The answer text of the reference case (generated ids decoded without special tokens)."""
    from utils.tokenization import decode_answer, load_tokenizer

    case = json.loads((tiny_cases_dir / "evaluate_plain.json").read_text())
    return decode_answer(case["generated_ids"], load_tokenizer(tiny_lisa_dir), clean=True)


# --- one-shot ---------------------------------------------------------------------------------


@pytest.mark.reference
def test_one_shot_prints_the_answer_saves_masks_and_json(
    model_args, tiny_cases_dir, tmp_path, expected_answer
):
    result_file = tmp_path / "result.json"
    vis = tmp_path / "vis"
    completed = subprocess.run(
        [sys.executable, "chat.py", *model_args, "--max_new_tokens", "16"]
        + ["--prompt", RED_CIRCLE, "--image", str(tiny_cases_dir / "img1.png")]
        + ["--vis_save_path", str(vis), "--output_json", str(result_file), "--rle"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    # the default --precision bf16 runs in fp32 on this CPU, said in one line
    if "cuda" not in completed.stderr:
        assert completed.stderr.strip().count("\n") == 0 and "fp32" in completed.stderr
    assert f"text_output: {expected_answer}\n" in completed.stdout
    result = json.loads(result_file.read_text())
    assert result["answer"] == expected_answer and result["prompt"] == RED_CIRCLE
    assert len(result["masks"]) == 1
    entry = result["masks"][0]
    assert Path(entry["mask_path"]) == vis / "img1_mask_0.jpg"
    assert Path(entry["overlay_path"]) == vis / "img1_masked_img_0.jpg"
    mask = decode_rle(entry["rle"])
    assert mask.shape == (240, 320) and int(mask.sum()) == entry["area"]
    assert entry["area"] == pytest.approx(37154, abs=2)  # the original chat.py's mask
    saved = np.asarray(Image.open(entry["mask_path"]))
    assert ((saved > 50) == mask).mean() > 0.99


@pytest.mark.reference
def test_one_shot_mistakes_are_one_line_and_exit_1(model_args, tmp_path, capsys):
    code = chat.main(
        [*model_args, "--precision", "fp32", "--prompt", "hi", "--image", str(tmp_path / "no.png")]
        + ["--vis_save_path", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err == f"chat.py: Image file '{tmp_path / 'no.png'}' does not exist.\n"
    with pytest.raises(SystemExit) as exit_info:
        chat.main(["--version", str(tmp_path), "--vision_save_path", "x"])
    assert exit_info.value.code == 2  # argparse: unknown flag
    with pytest.raises(SystemExit, match=r"cannot load --version=.*no config.json"):
        chat.main(["--version", str(tmp_path), "--prompt", "hi", "--image", "x.png"])
    # --image_size defaults to the checkpoint's SAM input; another size is refused by name.
    with pytest.raises(SystemExit, match=r"image_size 512 does not match the 1024-pixel input"):
        chat.main([*model_args, "--image_size", "512", "--prompt", "hi", "--image", "x.png"])


@pytest.mark.parametrize("flag", ["--load_in_8bit", "--load_in_4bit"])
def test_quantization_failure_names_bitsandbytes_and_the_device(monkeypatch, flag):
    def unsupported(*args, **kwargs):
        raise NotImplementedError("no kernel for this device")

    monkeypatch.setattr(chat.LisaSegmenter, "from_pretrained", unsupported)
    args = chat.parse_args(["--version", "ckpt", "--device", "cpu", flag])
    with pytest.raises(SystemExit) as exit_info:
        chat.load_segmenter(args)
    message = str(exit_info.value.code)
    bits = "8-bit" if flag == "--load_in_8bit" else "4-bit"
    assert message.startswith(f"chat.py: {bits} loading failed with bitsandbytes ")
    assert "on cpu: no kernel for this device" in message and "\n" not in message


@pytest.mark.reference
def test_a_long_conversation_drops_its_oldest_turns(model_args, tiny_cases_dir, tmp_path, capsys):
    segmenter = chat.load_segmenter(
        chat.parse_args([*model_args, "--precision", "fp32", "--max_new_tokens", "16"])
    )
    conversation = chat.Conversation()
    chat.open_image(segmenter, conversation, str(tiny_cases_dir / "img1.png"))
    chat.answer_turn(segmenter, conversation, RED_CIRCLE, tmp_path)
    chat.answer_turn(segmenter, conversation, "and now?", tmp_path)
    assert len(conversation.history) == 2
    segmenter.tokenizer.model_max_length = len(segmenter.prompt_ids("and again?")) + 20
    chat.answer_turn(segmenter, conversation, "and again?", tmp_path)
    assert "the oldest turn was dropped" in capsys.readouterr().out
    assert [turn[0] for turn in conversation.history] == ["and again?"]


# --- interactive, through a pseudo-terminal ---------------------------------------------------


class Terminal:
    """chat.py running on a pseudo-terminal (its controlling terminal, echo off), with the
    strict UTF-8 input decoding of a usual desktop locale."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
        pid, fd = pty.fork()
        if pid == 0:  # child: become the program
            try:
                # a background job may have inherited SIGINT ignored; a terminal user has not
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                attributes = termios.tcgetattr(0)
                attributes[3] &= ~termios.ECHO  # only the program's output comes back
                termios.tcsetattr(0, termios.TCSANOW, attributes)
                os.chdir(cwd)
                os.execve(sys.executable, [sys.executable, *argv], env)
            finally:
                os._exit(127)
        self.pid, self.fd, self.pending = pid, fd, ""
        self.transcript = ""

    def read_until(self, marker: str, timeout: float = 120) -> str:
        """Everything up to ``marker`` (consumed), with \\r\\n turned into \\n."""
        deadline = time.monotonic() + timeout
        while marker not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError(f"no {marker!r} within {timeout}s; got:\n{self.transcript}")
            try:
                chunk = os.read(self.fd, 65536).decode("utf-8", "replace").replace("\r\n", "\n")
            except OSError:  # the program has ended and closed the terminal
                raise AssertionError(f"ended before {marker!r}; got:\n{self.transcript}") from None
            self.pending += chunk
            self.transcript += chunk
        before, self.pending = self.pending.split(marker, 1)
        return before

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def ask(self, prompt: str, image: str | None = None) -> str:
        """Answer the prompt question (and the image question); return the output until the
        next prompt question."""
        self.send(prompt + "\n")
        if image is not None:
            assert self.read_until(chat.IMAGE_QUESTION) == ""
            self.send(image + "\n")
        return self.read_until(chat.PROMPT_QUESTION)

    def exit_code(self, timeout: float = 60, repeat: str | None = None) -> int:
        """Wait for the program to end; ``repeat`` is sent again every second while the program
        stays silent."""
        deadline = time.monotonic() + timeout
        next_repeat, silent_since = time.monotonic() + 1, len(self.transcript)
        while time.monotonic() < deadline:
            try:  # drain, so the program never blocks on a full terminal
                if select.select([self.fd], [], [], 0.1)[0]:
                    self.transcript += os.read(self.fd, 65536).decode("utf-8", "replace")
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            silent = len(self.transcript) == silent_since
            if repeat is not None and silent and time.monotonic() > next_repeat:
                self.send(repeat)
                next_repeat += 1
        os.kill(self.pid, 9)
        raise AssertionError(f"chat.py did not end; got:\n{self.transcript}")


def write_image_cases(folder: Path) -> dict[str, Path]:
    """Image files a user may type: odd but valid ones, and bad ones."""
    folder.mkdir()
    cases = {}

    def save(name, image, **options):
        cases[name] = folder / name
        image.save(cases[name], **options)

    save("grey.png", Image.new("L", (30, 20), 90))
    save("rgba.png", Image.new("RGBA", (30, 20), (200, 10, 10, 0)))
    palette = Image.new("P", (30, 20), 1)
    palette.putpalette([0, 0, 0, 250, 200, 0] + [0] * 762)
    save("palette.png", palette)
    save("deep.png", Image.fromarray(np.full((20, 30), 40000, dtype=np.uint16)))
    save("cmyk.jpg", Image.new("CMYK", (30, 20), (0, 200, 200, 0)))
    sideways = Image.new("RGB", (40, 20), (30, 160, 30))
    exif = sideways.getexif()
    exif[0x0112] = 6  # to be shown rotated: upright it is 20 wide, 40 high
    save("exif.jpg", sideways, exif=exif.tobytes())
    save("dot.png", Image.new("RGB", (1, 1), (255, 0, 0)))
    save("large.jpg", Image.new("RGB", (6000, 4000), (120, 130, 140)), quality=50)
    save("thin.png", Image.new("RGB", (3000, 1), (0, 0, 0)))

    # a valid PNG announcing 40000 x 40000 pixels: Pillow refuses it as a decompression bomb
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    cases["bomb.png"] = folder / "bomb.png"
    cases["bomb.png"].write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )
    noise = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    save("truncated.png", Image.fromarray(noise))
    cases["truncated.png"].write_bytes(cases["truncated.png"].read_bytes()[:2000])  # half
    cases["notes.png"] = folder / "notes.png"
    cases["notes.png"].write_text("this is not a picture")
    cases["folder"] = folder / "a_folder"
    cases["folder"].mkdir()
    return cases


def one_line(text: str) -> str:
    lines = text.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line, got {lines}"
    return lines[0]


def check_mistakes(terminal: Terminal, images: dict[str, Path], tmp_path: Path) -> None:
    """One line for each mistake, and the loop goes on."""
    assert one_line(terminal.ask("")) == "The prompt is empty: type a question (or /quit)."
    assert one_line(terminal.ask("/imgae")).startswith("Unknown command /imgae:")
    assert one_line(terminal.ask("hi", "")) == "No image yet: give the path of an image."
    terminal.send("hi\n")  # then a Latin-1 file name, typed on a UTF-8 terminal
    terminal.read_until(chat.IMAGE_QUESTION)
    os.write(terminal.fd, os.fsencode(tmp_path) + b"/caf\xe9.png\n")
    assert one_line(terminal.read_until(chat.PROMPT_QUESTION)).endswith("does not exist.")
    missing = str(tmp_path / "missing.png")
    assert one_line(terminal.ask("hi", missing)) == f"Image file '{missing}' does not exist."
    assert one_line(terminal.ask("hi", str(images["folder"]))).endswith(
        "is a directory, not an image file."
    )
    for bad in ("notes.png", "truncated.png"):
        assert one_line(terminal.ask("hi", str(images[bad]))).startswith(
            f"Cannot read image '{images[bad]}'"
        )
    assert "too large to decode safely" in one_line(terminal.ask("hi", str(images["bomb.png"])))
    assert one_line(terminal.ask("hi", str(images["thin.png"]))).endswith(
        "is 3000x1 pixels: too narrow to scale to 1024 pixels on its long side."
    )
    too_long = one_line(terminal.ask("segment the red circle " * 60))  # no image asked
    assert too_long.startswith("The prompt is") and "more than --model_max_length=200" in too_long


def check_odd_pictures(terminal: Terminal, images: dict[str, Path]) -> None:
    """Odd but valid pictures: each starts a conversation (upright size shown) and is answered."""
    sizes = {"grey.png": "30x20", "rgba.png": "30x20", "palette.png": "30x20", "deep.png": "30x20"}
    sizes.update(
        {"cmyk.jpg": "30x20", "exif.jpg": "20x40", "dot.png": "1x1", "large.jpg": "6000x4000"}
    )
    for name, size in sizes.items():
        reply = terminal.ask("What is in this image?", str(images[name]))
        assert f"New conversation about {images[name]} ({size})." in reply, reply
        assert "text_output: " in reply, reply


def check_reference_turns(terminal: Terminal, vis: Path, tiny_cases_dir: Path) -> None:
    """The reference question: answer, every mask saved under the original names."""
    reply = terminal.ask(RED_CIRCLE, str(tiny_cases_dir / "img1.png"))
    assert f"{vis / 'img1_mask_0.jpg'} has been saved." in reply
    assert f"{vis / 'img1_masked_img_0.jpg'} has been saved." in reply
    # Enter keeps the image: same conversation (no new one), mask numbers go on
    reply = terminal.ask("And the blue rectangle?", "")
    assert "New conversation" not in reply and "text_output: " in reply
    assert "img1_mask_0.jpg" not in reply
    # the same path again also continues it; /reset starts over
    assert "New conversation" not in terminal.ask(
        "Anything else?", str(tiny_cases_dir / "img1.png")
    )
    assert (
        one_line(terminal.ask("/reset"))
        == "Conversation cleared; the next prompt starts a new one."
    )


@pytest.mark.reference
def test_interactive_session_survives_every_bad_input(model_args, tiny_cases_dir, tmp_path):
    images = write_image_cases(tmp_path / "images")
    vis = tmp_path / "vis"
    terminal = Terminal(
        ["chat.py", *model_args, "--precision", "fp32", "--max_new_tokens", "16"]
        + ["--model_max_length", "200", "--vis_save_path", str(vis)],
        REPO,
    )
    banner = terminal.read_until(chat.PROMPT_QUESTION)
    assert "/reset" in banner and "/quit" in banner and "another path" in banner

    check_mistakes(terminal, images, tmp_path)
    check_odd_pictures(terminal, images)
    check_reference_turns(terminal, vis, tiny_cases_dir)
    terminal.send("\x04")  # Ctrl-D at the prompt question
    assert terminal.exit_code() == 0
    assert "Traceback" not in terminal.transcript
    assert (vis / "img1_mask_0.jpg").is_file() and (vis / "img1_masked_img_0.jpg").is_file()


@pytest.mark.reference
def test_ctrl_c_ends_the_chat_cleanly(model_args, tmp_path):
    terminal = Terminal(
        ["chat.py", *model_args, "--precision", "fp32", "--vis_save_path", str(tmp_path)], REPO
    )
    terminal.read_until(chat.PROMPT_QUESTION)
    terminal.send("What is this?\n")
    terminal.read_until(chat.IMAGE_QUESTION)
    # Ctrl-C while the program waits at the image question. A signal that lands between
    # Python's prompt and its read() is only seen at the next one, so press it again if needed
    # (a person is never that quick).
    terminal.send("\x03")
    assert terminal.exit_code(repeat="\x03") == chat.EXIT_INTERRUPTED
    assert "Traceback" not in terminal.transcript and "KeyboardInterrupt" not in terminal.transcript
