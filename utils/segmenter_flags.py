"""The model flags of chat.py and app.py (one definition), their typed settings, and loading a
segmenter from those settings.

The entry scripts parse the flags, check them (:func:`check_model_flags`) and turn them into a
:class:`SegmenterSettings` once; what loads the model sees only the settings. A failure raises
:class:`ModelLoadError` with one sentence; the entry scripts turn it into their one-line exit
message.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from utils.conversation import CONV_TYPES
from utils.devices import PRECISIONS, DeviceError, resolve_device
from utils.ignored_flags import IGNORED_HELP, announce_ignored_flags

if TYPE_CHECKING:
    import torch

    from model.segmenter import LisaSegmenter, PromptTooLongError

POSITIVE_FLAGS = ("max_new_tokens", "model_max_length", "image_size")
LORA_R_DEFAULT = 8  # the original chat.py's --lora_r; a merged checkpoint needs none


class ModelLoadError(Exception):
    """The model named by the flags cannot be loaded; the message is one sentence."""


@dataclass(frozen=True)
class SegmenterSettings:
    """What loads the segmenter of chat.py and app.py: one field per model flag (--lora_r, kept
    for the original's command lines, changes nothing and has none)."""

    version: str = "xinlai/LISA-13B-llama2-v1"  # checkpoint directory
    precision: str = "bf16"  # fp32 | bf16 | fp16; a CPU runs in fp32
    image_size: int | None = None  # SAM input side; None: the checkpoint's SAM's
    model_max_length: int = 512  # longest prompt in tokens
    vision_tower: str | None = None  # CLIP directory; None: the one the checkpoint names
    local_rank: int = 0  # CUDA device index when device is None
    load_in_8bit: bool = False  # the LLM in 8 bits (bitsandbytes)
    load_in_4bit: bool = False  # the LLM in 4 bits (bitsandbytes)
    use_mm_start_end: bool = True  # <im_start>/<im_end> around the image tokens
    conv_type: str = "llava_v1"  # conversation template
    device: str | None = None  # cuda, cuda:1, cpu ...; None: CUDA when present
    max_new_tokens: int = 512  # longest answer in tokens

    @classmethod
    def from_flags(cls, namespace: argparse.Namespace) -> SegmenterSettings:
        """The model flags of a parsed chat.py or app.py command line (their other flags stay
        out).

        Raises:
            AttributeError: a field without a flag (a programming error).
        """
        return cls(**{field.name: getattr(namespace, field.name) for field in fields(cls)})


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that choose and load the model (the original chat.py's, plus --device); each
    one's destination is a :class:`SegmenterSettings` field and its default the field's."""
    d = SegmenterSettings()
    parser.add_argument("--version", default=d.version, help="checkpoint directory")
    parser.add_argument(
        "--precision",
        default=d.precision,
        type=str,
        choices=list(PRECISIONS),
        help="precision for inference (bf16 and fp16 run in fp32 on a CPU)",
    )
    parser.add_argument(
        "--image_size",
        default=d.image_size,
        type=int,
        help="SAM input side; default the size the checkpoint's SAM was built for (1024 for "
        "released LISA models); another value is refused",
    )
    parser.add_argument(
        "--model_max_length", default=d.model_max_length, type=int, help="longest prompt in tokens"
    )
    parser.add_argument(
        "--lora_r",
        default=LORA_R_DEFAULT,
        type=int,
        help=f"{IGNORED_HELP} (the checkpoint has its LoRA weights merged)",
    )
    parser.add_argument(
        "--vision-tower",
        default=d.vision_tower,
        type=str,
        help="CLIP directory; default: the one the checkpoint's config names "
        "(openai/clip-vit-large-patch14 for released LISA models)",
    )
    parser.add_argument(
        "--local-rank",
        default=d.local_rank,
        type=int,
        help="CUDA device index when --device is not given",
    )
    parser.add_argument("--load_in_8bit", action="store_true", default=d.load_in_8bit)
    parser.add_argument("--load_in_4bit", action="store_true", default=d.load_in_4bit)
    parser.add_argument(
        "--use_mm_start_end", action=argparse.BooleanOptionalAction, default=d.use_mm_start_end
    )
    parser.add_argument("--conv_type", default=d.conv_type, type=str, choices=list(CONV_TYPES))
    parser.add_argument(
        "--device", default=d.device, help="cuda, cuda:1, cpu ... (default: CUDA when present)"
    )
    parser.add_argument(
        "--max_new_tokens", default=d.max_new_tokens, type=int, help="longest answer in tokens"
    )


def check_model_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse impossible model flag values through ``parser.error`` (usage + one line, exit 2);
    a --lora_r other than the default gets the one line of an ignored flag."""
    announce_ignored_flags(["--lora_r"] if args.lora_r != LORA_R_DEFAULT else [], parser.prog)
    if args.load_in_8bit and args.load_in_4bit:
        parser.error("choose one of --load_in_8bit and --load_in_4bit")
    for name in POSITIVE_FLAGS:
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")


def load_segmenter(settings: SegmenterSettings) -> LisaSegmenter:
    """The segmenter the model flags describe.

    Raises:
        ModelLoadError: a missing or unusable checkpoint, a wrong --image_size, a device this
            machine lacks, a quantized load this device's bitsandbytes cannot do.
    """
    from model.checkpoint_files import CheckpointError
    from model.segmenter import LisaSegmenter

    try:
        device = resolve_device(settings.device, local_rank=settings.local_rank)
    except DeviceError as error:
        flag = "--device" if settings.device else "--local-rank"
        raise ModelLoadError(f"{flag} {error}") from None
    try:
        return LisaSegmenter.from_pretrained(
            settings.version,
            precision=settings.precision,
            device=str(device),
            vision_tower=settings.vision_tower,
            load_in_8bit=settings.load_in_8bit,
            load_in_4bit=settings.load_in_4bit,
            model_max_length=settings.model_max_length,
            image_size=settings.image_size,
            conv_type=settings.conv_type,
            use_mm_start_end=settings.use_mm_start_end,
            max_new_tokens=settings.max_new_tokens,
        )
    except (FileNotFoundError, CheckpointError) as error:
        raise ModelLoadError(f"cannot load --version={settings.version}: {error}") from None
    except Exception as error:
        # bitsandbytes builds fail in many ways on devices they do not support (ImportError,
        # RuntimeError, NotImplementedError, ...): name the library, its version and the device
        if settings.load_in_8bit or settings.load_in_4bit:
            raise ModelLoadError(quantization_failure(settings, device, error)) from None
        if isinstance(error, ValueError | ImportError):
            raise ModelLoadError(f"cannot load --version={settings.version}: {error}") from None
        raise


def quantization_failure(
    settings: SegmenterSettings, device: torch.device, error: Exception
) -> str:
    """One sentence on a failed 8- or 4-bit load: bitsandbytes' version, the device, why."""
    try:
        from importlib.metadata import version

        installed = f"bitsandbytes {version('bitsandbytes')}"
    except Exception:  # not installed, or no metadata: the message says so either way
        installed = "bitsandbytes (not installed)"
    bits = "8-bit" if settings.load_in_8bit else "4-bit"
    return (
        f"{bits} loading failed with {installed} on {device}: "
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
