"""Chat with a LISA model in a terminal, or answer one question from a script.

Interactive (the original's two questions, then the answer and the mask pictures):

    python chat.py --version=PATH [--precision=bf16] [--load_in_8bit | --load_in_4bit]

One-shot:

    python chat.py --version=PATH --prompt="Where is the dog?" --image=dog.jpg [--output_json=out.json]

Every mask of an answer is saved in --vis_save_path as {stem}_mask_{i}.jpg and
{stem}_masked_img_{i}.jpg. The conversation goes on (the model sees the earlier turns) while the
image stays the same; a new image starts a new conversation.

The --vis_save_path folder may hold other files, but chat.py replaces only pictures it wrote there
itself (listed in the folder's .lisa_outputs file): when a user's file has the name a mask picture
would take, that answer's pictures are not saved and one line says why (the chat goes on).
--output_json replaces only an earlier result file. --overwrite lifts both limits for files of
those names; nothing else is ever replaced or deleted. Every file is written under a temporary name
and renamed into place.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.segmenter import (
    InputError,
    LisaSegmenter,
    PromptTooLongError,
    SegmentationResult,
)
from utils.console import quiet_libraries
from utils.output_dir import OutputDirError, check_apart_from_inputs
from utils.result_json import is_result_file, result_document, write_json
from utils.segmenter_flags import (
    ModelLoadError,
    SegmenterSettings,
    add_model_flags,
    check_model_flags,
    one_line,
    too_long_message,
)
from utils.segmenter_flags import load_segmenter as load_segmenter_from_flags
from utils.visualization import MaskFiles, save_mask_pictures

PROMPT_QUESTION = "Please input your prompt: "
IMAGE_QUESTION = "Please input the image path: "
HELP = """\
Type a prompt, then the path of an image. Commands at the prompt question:
  /reset   start a new conversation (forget the earlier turns)
  /quit    leave (Ctrl-D or Ctrl-C also leave)
  /help    show this again
At the image question, press Enter to keep the current image and continue the conversation,
or give another path to change the image (which starts a new conversation)."""
QUIT_COMMANDS = ("/quit", "/exit")
RESET_COMMAND = "/reset"
HELP_COMMAND = "/help"
EXIT_INTERRUPTED = 130  # the shell's convention for a program ended by Ctrl-C


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LISA chat", allow_abbrev=False)
    add_model_flags(parser)
    parser.add_argument(
        "--vis_save_path",
        default="./vis_output",
        type=str,
        help="folder of the mask pictures (created when missing; files chat.py did not write "
        "there are never replaced)",
    )
    parser.add_argument("--prompt", default=None, help="one-shot mode: the question (with --image)")
    parser.add_argument(
        "--image", default=None, help="one-shot mode: the image path (with --prompt)"
    )
    parser.add_argument(
        "--output_json", default=None, help="one-shot mode: also write the result to this file"
    )
    parser.add_argument(
        "--rle",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="put each mask as COCO RLE into the JSON result (needs pycocotools)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="also replace files of the names chat.py writes that it did not write itself (a "
        "mask picture in --vis_save_path, the --output_json file); nothing else is touched",
    )
    args = parser.parse_args(argv)
    if (args.prompt is None) != (args.image is None):
        parser.error("one-shot mode needs both --prompt and --image")
    if args.output_json is not None and args.prompt is None:
        parser.error("--output_json is for the one-shot mode (--prompt and --image)")
    check_model_flags(parser, args)
    return args


def load_segmenter(args: argparse.Namespace) -> LisaSegmenter:
    """Load the model the flags name; a user mistake raises SystemExit with one sentence."""
    try:
        return load_segmenter_from_flags(SegmenterSettings.from_flags(args))
    except ModelLoadError as error:
        raise SystemExit(f"chat.py: {error}") from None


class MasksNotSavedError(OutputDirError):
    """An answer whose mask pictures could not be saved; ``result`` is the answer itself."""

    def __init__(self, result: SegmentationResult, reason: OutputDirError) -> None:
        super().__init__(f"the masks of this answer were not saved: {reason}")
        self.result = result


def prepare_outputs(args: argparse.Namespace) -> Path:
    """Check the output paths and create --vis_save_path, before the model loads.

    Raises:
        OutputDirError: one sentence naming the flag and what is wrong.
    """
    inputs = {"--version": args.version, "--vision-tower": args.vision_tower}
    save_dir = Path(args.vis_save_path)
    # the folder may hold an input: no file chat.py did not write there is ever replaced
    check_apart_from_inputs(save_dir, "--vis_save_path", inputs, refuse_containing=False)
    if save_dir.exists() and not save_dir.is_dir():
        raise OutputDirError(f"--vis_save_path {save_dir} is a file; expected a folder.")
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputDirError(
            f"--vis_save_path {save_dir} cannot be created ({error.strerror or error})."
        ) from None
    if not os.access(save_dir, os.W_OK | os.X_OK):
        raise OutputDirError(f"--vis_save_path {save_dir} is not writable.")
    if args.output_json is not None:
        result_file = Path(args.output_json)
        check_apart_from_inputs(result_file, "--output_json", {**inputs, "--image": args.image})
        if result_file.is_dir():
            raise OutputDirError(f"--output_json {result_file} is a folder; expected a file name.")
        if result_file.exists() and not args.overwrite and not is_result_file(result_file):
            raise OutputDirError(
                f"--output_json {result_file} exists and is not a chat.py result; choose another "
                "name or pass --overwrite to replace it."
            )
    return save_dir


@dataclass
class Conversation:
    """What the chat remembers between turns."""

    image_path: Path | None = None  # resolved path of the current image
    image_mtime: float | None = None  # so that an image rewritten on disk counts as new
    pixels: np.ndarray | None = None  # [H, W, 3] uint8 RGB of the current image
    history: list[tuple[str, str]] = field(default_factory=list)
    masks_saved: int = 0  # masks of this conversation so far: the next mask file's index

    def reset(self) -> None:
        self.history.clear()
        self.masks_saved = 0


def answer_turn(
    segmenter: LisaSegmenter,
    conversation: Conversation,
    prompt: str,
    save_dir: Path,
    overwrite: bool = False,
) -> tuple[SegmentationResult, list[MaskFiles]]:
    """One turn: generate, remember it, save its masks.

    Raises:
        InputError: a bad prompt.
        MasksNotSavedError: a file of the user's has a picture's name (the turn is remembered).
    """
    result, dropped = segmenter.segment_fitting(
        conversation.pixels, prompt, history=conversation.history
    )
    for _ in range(dropped):
        print(
            f"(The conversation is longer than --model_max_length={segmenter.model_max_length} "
            "tokens: the oldest turn was dropped.)"
        )
    conversation.history = result.history
    try:
        files = save_mask_pictures(
            conversation.pixels,
            result.masks,
            save_dir,
            conversation.image_path.stem,
            first_index=conversation.masks_saved,
            overwrite=overwrite,
        )
    except OutputDirError as error:
        raise MasksNotSavedError(result, error) from None
    conversation.masks_saved += len(files)
    return result, files


def report(result: SegmentationResult, files: list[MaskFiles] | None) -> None:
    """The answer and the pictures saved (``files`` None: not saved, said elsewhere)."""
    print(f"text_output: {result.text}")
    if files is None:
        return
    for mask_files in files:
        print(f"{mask_files.mask_path} has been saved.")
        print(f"{mask_files.overlay_path} has been saved.")
    if not files:
        print("(no [SEG] in the answer: no mask)")


def open_image(segmenter: LisaSegmenter, conversation: Conversation, path_text: str) -> str | None:
    """Switch to the image at ``path_text`` unless it is the current one; returns a notice."""
    path = Path(path_text.strip().strip("'\""))
    with contextlib.suppress(RuntimeError):  # "~someone" with no such user: read as typed
        path = path.expanduser()
    try:
        resolved, mtime = path.resolve(), path.stat().st_mtime
    except (OSError, RuntimeError, ValueError):  # RuntimeError: a link loop (Python < 3.13)
        resolved, mtime = path, None  # missing or a loop: let read_image phrase the message
    if resolved == conversation.image_path and mtime == conversation.image_mtime:
        return None
    pixels = segmenter.read_image(path)  # InputError leaves the conversation as it was
    conversation.image_path, conversation.image_mtime, conversation.pixels = resolved, mtime, pixels
    conversation.reset()
    height, width = pixels.shape[:2]
    return f"New conversation about {path} ({width}x{height})."


def run_command(command: str, conversation: Conversation) -> bool:
    """Carry out a /command typed at the prompt question (lower-cased, stripped; /quit is the
    caller's); False when the line is a question."""
    if command == RESET_COMMAND:
        conversation.reset()
        print("Conversation cleared; the next prompt starts a new one.")
    elif command == HELP_COMMAND:
        print(HELP)
    elif command.startswith("/") and " " not in command:
        print(f"Unknown command {command}: the commands are /reset, /quit and /help.")
    else:
        return False
    return True


def prompt_problem(segmenter: LisaSegmenter, prompt: str) -> str | None:
    """Why a prompt cannot work (empty, too long, unusable), in one line; None when it can."""
    if not prompt.strip():
        return "The prompt is empty: type a question (or /quit)."
    try:
        segmenter.prompt_ids(prompt)
    except PromptTooLongError as error:
        return too_long_message(error)
    except InputError as error:
        return one_line(error)
    return None


def interactive(segmenter: LisaSegmenter, save_dir: Path, overwrite: bool = False) -> int:
    # bytes that are not valid text (a path in another encoding) must not end the chat: keep
    # them as they are for file names, and show them escaped
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    print(HELP)
    conversation = Conversation()
    try:
        while True:
            prompt = input(PROMPT_QUESTION)
            command = prompt.strip().lower()
            if command in QUIT_COMMANDS:
                return 0
            if run_command(command, conversation):
                continue
            problem = prompt_problem(segmenter, prompt)  # said before the image is asked for
            if problem is not None:
                print(problem)
                continue
            path_text = input(IMAGE_QUESTION)
            try:
                if path_text.strip():
                    notice = open_image(segmenter, conversation, path_text)
                    if notice:
                        print(notice)
                elif conversation.pixels is None:
                    print("No image yet: give the path of an image.")
                    continue
                result, files = answer_turn(segmenter, conversation, prompt, save_dir, overwrite)
            except PromptTooLongError as error:
                print(too_long_message(error))
                continue
            except MasksNotSavedError as error:
                report(error.result, None)
                print(one_line(error))
                continue
            except (InputError, OSError) as error:
                print(one_line(error))
                continue
            report(result, files)
    except EOFError:
        print()
        return 0
    except KeyboardInterrupt:
        print()
        return EXIT_INTERRUPTED


def one_shot(segmenter: LisaSegmenter, args: argparse.Namespace, save_dir: Path) -> int:
    conversation = Conversation()
    try:
        open_image(segmenter, conversation, args.image)
        result, files = answer_turn(segmenter, conversation, args.prompt, save_dir, args.overwrite)
        report(result, files)
        if args.output_json is not None:
            write_result_json(Path(args.output_json), args, result, files)
    except PromptTooLongError as error:
        print(f"chat.py: {too_long_message(error)}", file=sys.stderr)
        return 1
    except MasksNotSavedError as error:
        report(error.result, None)
        print(f"chat.py: {one_line(error)}", file=sys.stderr)
        return 2
    except (InputError, OSError) as error:
        print(f"chat.py: {one_line(error)}", file=sys.stderr)
        return 1
    return 0


def write_result_json(
    path: Path, args: argparse.Namespace, result: SegmentationResult, files: list[MaskFiles]
) -> None:
    document = result_document(
        prompt=args.prompt,
        image=args.image,
        answer=result.text,
        masks=result.masks,
        mask_paths=[mask_files.mask_path for mask_files in files],
        overlay_paths=[mask_files.overlay_path for mask_files in files],
        rle=args.rle,
    )
    write_json(path, document)
    print(f"{path} has been saved.")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rle:
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise SystemExit("chat.py: --rle needs pycocotools (pip install pycocotools)") from None
    quiet_libraries()
    try:
        save_dir = prepare_outputs(args)
    except OutputDirError as error:
        print(f"chat.py: {one_line(error)}", file=sys.stderr)
        return 2
    try:
        segmenter = load_segmenter(args)
        if args.prompt is not None:
            return one_shot(segmenter, args, save_dir)
        return interactive(segmenter, save_dir, args.overwrite)
    except KeyboardInterrupt:
        print()
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    exit_code = main()
    if exit_code == EXIT_INTERRUPTED:
        # leaving already: another Ctrl-C while the libraries tear down must not kill the process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(exit_code)
