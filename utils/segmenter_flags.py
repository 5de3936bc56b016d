"""The model flags of chat.py and app.py (one definition), and loading a segmenter from them.

Library code: a failure raises :class:`ModelLoadError` with one sentence; the entry scripts
turn it into their one-line exit message.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from utils.conversation import CONV_TYPES
from utils.ignored_flags import IGNORED_HELP, announce_ignored_flags

if TYPE_CHECKING:
    from model.segmenter import LisaSegmenter, PromptTooLongError

POSITIVE_FLAGS = ("max_new_tokens", "model_max_length", "image_size")
LORA_R_DEFAULT = 8  # the original chat.py's --lora_r; a merged checkpoint needs none


class ModelLoadError(Exception):
    """The model named by the flags cannot be loaded; the message is one sentence."""


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and load the model (the original chat.py's, plus --device)."""
    parser.add_argument(
        "--version", default="xinlai/LISA-13B-llama2-v1", help="checkpoint directory"
    )
    parser.add_argument(
        "--precision",
        default="bf16",
        type=str,
        choices=["fp32", "bf16", "fp16"],
        help="precision for inference (bf16 and fp16 run in fp32 on a CPU)",
    )
    parser.add_argument(
        "--image_size",
        default=None,
        type=int,
        help="SAM input side; default the size the checkpoint's SAM was built for (1024 for "
        "released LISA models); another value is refused",
    )
    parser.add_argument(
        "--model_max_length", default=512, type=int, help="longest prompt in tokens"
    )
    parser.add_argument(
        "--lora_r",
        default=LORA_R_DEFAULT,
        type=int,
        help=f"{IGNORED_HELP} (the checkpoint has its LoRA weights merged)",
    )
    parser.add_argument(
        "--vision-tower",
        default=None,
        type=str,
        help="CLIP directory; default: the one the checkpoint's config names "
        "(openai/clip-vit-large-patch14 for released LISA models)",
    )
    parser.add_argument(
        "--local-rank", default=0, type=int, help="CUDA device index when --device is not given"
    )
    parser.add_argument("--load_in_8bit", action="store_true", default=False)
    parser.add_argument("--load_in_4bit", action="store_true", default=False)
    parser.add_argument("--use_mm_start_end", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--conv_type", default="llava_v1", type=str, choices=list(CONV_TYPES))
    parser.add_argument(
        "--device", default=None, help="cuda, cuda:1, cpu ... (default: CUDA when present)"
    )
    parser.add_argument("--max_new_tokens", default=512, type=int, help="longest answer in tokens")


def check_model_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible model flag values through ``parser.error`` (usage + one line, exit 2);
    a --lora_r other than the default gets the one line of an ignored flag."""
    announce_ignored_flags(["--lora_r"] if args.lora_r != LORA_R_DEFAULT else [], parser.prog)
    if args.load_in_8bit and args.load_in_4bit:
        parser.error("choose one of --load_in_8bit and --load_in_4bit")
    for name in POSITIVE_FLAGS:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")


def resolve_device(args: argparse.Namespace) -> str:
    """--device, else the CUDA device --local-rank names when CUDA is present, else the CPU."""
    if args.device is not None:
        return args.device
    import torch

    return f"cuda:{args.local_rank}" if torch.cuda.is_available() else "cpu"


def load_segmenter(args: argparse.Namespace) -> LisaSegmenter:
    """The segmenter the model flags describe.

    Raises:
        ModelLoadError: a missing or unusable checkpoint, a wrong --image_size, a quantized load
            this device's bitsandbytes cannot do.
    """
    from model.checkpoint_files import CheckpointError
    from model.loading import DeviceError
    from model.loading import resolve_device as check_device
    from model.segmenter import LisaSegmenter

    device = resolve_device(args)
    try:
        check_device(device)
    except DeviceError as error:
        raise ModelLoadError(f"{'--device' if args.device else '--local-rank'} {error}") from None
    try:
        return LisaSegmenter.from_pretrained(
            args.version,
            precision=args.precision,
            device=device,
            vision_tower=args.vision_tower,
            load_in_8bit=args.load_in_8bit,
            load_in_4bit=args.load_in_4bit,
            model_max_length=args.model_max_length,
            image_size=args.image_size,
            conv_type=args.conv_type,
            use_mm_start_end=args.use_mm_start_end,
            max_new_tokens=args.max_new_tokens,
        )
    except (FileNotFoundError, CheckpointError) as error:
        raise ModelLoadError(f"cannot load --version={args.version}: {error}") from None
    except Exception as error:
        # bitsandbytes builds fail in many ways on devices they do not support (ImportError,
        # RuntimeError, NotImplementedError, ...): name the library, its version and the device
        if args.load_in_8bit or args.load_in_4bit:
            raise ModelLoadError(quantization_failure(args, error)) from None
        if isinstance(error, ValueError | ImportError):
            raise ModelLoadError(f"cannot load --version={args.version}: {error}") from None
        raise


def quantization_failure(args: argparse.Namespace, error: Exception) -> str:
    try:
        from importlib.metadata import version

        installed = f"bitsandbytes {version('bitsandbytes')}"
    except Exception:  # not installed, or no metadata: the message says so either way
        installed = "bitsandbytes (not installed)"
    bits = "8-bit" if args.load_in_8bit else "4-bit"
    return (
        f"{bits} loading failed with {installed} on {resolve_device(args)}: "
        f"{one_line(error)} (run without --load_in_8bit/--load_in_4bit, or install a bitsandbytes "
        "build for this device)"
    )


def one_line(error: Exception) -> str:
    """An error message on a single line (library messages sometimes span several)."""
    return " ".join(str(error).split())


def too_long_message(error: PromptTooLongError) -> str:
    return (
        f"The prompt is {error.num_tokens} tokens long, more than "
        f"--model_max_length={error.limit}; shorten it."
    )
