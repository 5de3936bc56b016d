"""The web demo: upload an image, ask about it, see every mask in its own colour.

    python app.py --version=PATH [--precision=fp32] [--examples DIR] [--host 127.0.0.1] [--port 7860]

It takes chat.py's model flags and asks the same LisaSegmenter. Each [SEG] of an answer gets a
colour, used for its mask on the image and for the mark in the answer text. Follow-up questions
about the same image continue the conversation (the model sees the earlier turns); a new image,
or Reset, starts a new one. Each answer can be downloaded: one PNG per mask, the overlay, and a
JSON with the answer and the masks as COCO RLE (the schema of chat.py --output_json).

Requests go through the model one at a time (gradio's queue); every browser tab has its own
conversation. When --version is the quick start's model (runs/quickstart/model), the toy
ReasonSeg val images are offered as examples.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
import socket
import sys
import tempfile
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from utils.answer_display import (
    answer_html,
    hex_color,
    mask_label,
    overlay_masks,
    split_answer,
)
from utils.console import quiet_libraries
from utils.constants import DEFAULT_IMAGE_TOKEN
from utils.result_json import result_document, write_json
from utils.segmenter_flags import (
    ModelLoadError,
    SegmenterSettings,
    add_model_flags,
    check_model_flags,
    load_segmenter,
    one_line,
    too_long_message,
)
from utils.transforms import longest_side_shape

# The demo makes no calls outside this machine (no telemetry, no version check); gradio is
# imported later, where it is used.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
QUICKSTART_VAL = Path("dataset/reason_seg/ReasonSeg/val")  # beside the quick start's model/
QUICKSTART_EXAMPLES = 6  # toy val images offered for the quick start's model
MAX_EXAMPLES = 100  # images of an --examples folder offered at most
MAX_FILE_SIZE = "50mb"  # uploads above this are refused by gradio before they reach the model
DEFAULT_OPACITY = 0.5
SESSION_SECONDS = 6 * 3600  # an idle tab's conversation is kept this long
IMAGE_HEIGHT = 360  # pixels of the page the input image and the overlay take
DEFAULT_PROMPT = "What is in this image? Please output segmentation mask."
NO_IMAGE = "No image: upload or paste one, or pick an example, then press Send."
EMPTY_PROMPT = "The prompt is empty: type a question about the image."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LISA web demo", allow_abbrev=False)
    add_model_flags(parser)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)"
    )
    parser.add_argument("--port", default=7860, type=int, help="port to serve on")
    parser.add_argument(
        "--queue_size",
        default=16,
        type=int,
        help="requests that may wait for the model; more are refused with a message",
    )
    parser.add_argument(
        "--examples",
        default=None,
        help="folder of example images, each with an optional ReasonSeg .json whose first text "
        "becomes the prompt (default: the quick start's toy val images when --version is the "
        "quick start's model)",
    )
    parser.add_argument(
        "--max_image_side",
        default=4096,
        type=int,
        help="images with a longer side are scaled down to it before the model sees them "
        "(masks and downloads then have the scaled size)",
    )
    args = parser.parse_args(argv)
    check_model_flags(parser, args)
    for name in ("queue_size", "max_image_side"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    if not 0 < args.port < 65536:
        parser.error("--port must be between 1 and 65535")
    return args


# --- examples -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    image: Path
    prompt: str


def example_prompt(image: Path) -> str:
    """The request of the image's ReasonSeg annotation (its first text, worded as in training)."""
    from utils.data.questions import segmentation_questions
    from utils.reason_seg import BadAnnotationError, load_annotation

    annotation_path = image.with_suffix(".json")
    if not annotation_path.is_file():
        return DEFAULT_PROMPT
    try:
        annotation = load_annotation(annotation_path)
    except BadAnnotationError as error:
        print(f"app.py: {one_line(error)}; its example gets a generic prompt.", file=sys.stderr)
        return DEFAULT_PROMPT
    if not annotation.texts:
        return DEFAULT_PROMPT
    question = segmentation_questions(annotation.texts[0], annotation.is_sentence)[0]
    return question.replace(DEFAULT_IMAGE_TOKEN, "").strip()


def find_examples(folder: Path, limit: int) -> list[Example]:
    """The first ``limit`` images of ``folder`` (sorted by name) with their prompts."""
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [Example(image, example_prompt(image)) for image in images[:limit]]


def examples_for(args: argparse.Namespace) -> tuple[list[Example], Path | None]:
    """--examples, else the quick start's val images when --version is its model.

    Raises:
        ValueError: --examples is not a folder or holds no image.
    """
    if args.examples is not None:
        folder = Path(args.examples)
        if not folder.is_dir():
            raise ValueError(f"--examples {folder} is not a folder")
        examples = find_examples(folder, MAX_EXAMPLES)
        if not examples:
            raise ValueError(f"--examples {folder} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        return examples, folder
    quickstart_val = Path(args.version).parent / QUICKSTART_VAL
    if quickstart_val.is_dir():
        return find_examples(quickstart_val, QUICKSTART_EXAMPLES), quickstart_val
    return [], None


# --- one conversation -----------------------------------------------------------------------------


@dataclass
class Session:
    """What one browser tab's conversation holds (gradio keeps one per session)."""

    image_file: str | None = None  # the uploaded file this conversation is about
    image_name: str = "image"  # the file name the user gave
    pixels: np.ndarray | None = None  # [H, W, 3] uint8 RGB as the model saw it
    history: list[tuple[str, str]] = field(default_factory=list)  # (prompt, answer) turns
    messages: list[dict] = field(default_factory=list)  # the chat as shown
    masks: list[np.ndarray] = field(default_factory=list)  # the last answer's [H, W] bool masks
    masks_saved: int = 0  # masks of this conversation so far: numbers the mask files
    turns: int = 0
    download_dir: str | None = None  # the last answer's files

    def restart(self) -> None:
        """Forget the conversation and delete its files."""
        if self.download_dir:
            shutil.rmtree(self.download_dir, ignore_errors=True)
        self.__dict__.update(Session().__dict__)


@dataclass
class Picture:
    file: str
    name: str  # the file name the user gave
    pixels: np.ndarray  # [H, W, 3] uint8 RGB
    notice: str


def safe_stem(name: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).stem)
    return stem.strip("._") or "image"


def scale_down(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """Pixels with the longer side at most ``max_side`` (area interpolation)."""
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    new_height, new_width = longest_side_shape(height, width, max_side)
    size = (max(new_width, 1), max(new_height, 1))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def clamp_opacity(value) -> float:
    """The slider's value as a blend weight in [0, 1] (an API caller may send anything)."""
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return DEFAULT_OPACITY


def page_message(message: str) -> str:
    """gradio shows messages as HTML: keep "<image>" and the like as text."""
    return html.escape(message, quote=False)


class DemoApp:
    """The page's handlers around one segmenter; per-tab data lives in :class:`Session`."""

    def __init__(self, segmenter, *, max_image_side: int, downloads_root: Path) -> None:
        self.segmenter = segmenter
        self.max_image_side = max_image_side
        self.downloads_root = downloads_root

    def read_picture(self, payload: dict | None) -> Picture:
        """The uploaded image as the model will see it; gr.Error when there is none."""
        import gradio as gr

        from model.segmenter import InputError

        path = payload.get("path") if isinstance(payload, dict) else None
        if not path:
            raise gr.Error(NO_IMAGE)
        name = payload.get("orig_name") or Path(path).name
        try:
            pixels = self.segmenter.read_image(path)
        except InputError as error:
            message = one_line(error).replace(str(path), name)
            raise gr.Error(page_message(message)) from None
        height, width = pixels.shape[:2]
        notice = f"New conversation about {name} ({width}x{height})."
        scaled = scale_down(pixels, self.max_image_side)
        if scaled is not pixels:
            notice = (
                f"{name} is {width}x{height} pixels: scaled to {scaled.shape[1]}x"
                f"{scaled.shape[0]} (--max_image_side={self.max_image_side})."
            )
            gr.Warning(page_message(notice))
        return Picture(path, name, scaled, notice)

    def ask(self, payload: dict | None, prompt: str | None, opacity: float, session: Session):
        """Send: answer ``prompt`` about the image, continuing the conversation about it."""
        import gradio as gr

        from model.segmenter import InputError, PromptTooLongError

        if not prompt or not prompt.strip():
            raise gr.Error(EMPTY_PROMPT)
        same_image = isinstance(payload, dict) and payload.get("path") == session.image_file
        picture = None if same_image else self.read_picture(payload)
        pixels = session.pixels if picture is None else picture.pixels
        history = session.history if picture is None else []
        try:
            result, dropped = self.segmenter.segment_fitting(pixels, prompt, history=history)
        except PromptTooLongError as error:
            raise gr.Error(page_message(too_long_message(error))) from None
        except InputError as error:
            raise gr.Error(page_message(one_line(error))) from None
        except Exception as error:  # the server goes on; the console keeps the details
            traceback.print_exc()
            message = f"The model failed on this request: {one_line(error)}"
            raise gr.Error(page_message(message)) from None
        notices = []
        if picture is not None:
            session.restart()
            session.image_file, session.pixels = picture.file, picture.pixels
            session.image_name = picture.name
            notices.append(picture.notice)
        if dropped:
            notices.append(
                f"The conversation was longer than --model_max_length="
                f"{self.segmenter.model_max_length} tokens: its {dropped} oldest turn(s) were "
                "dropped."
            )
            gr.Warning(notices[-1])
        if not result.masks:
            notices.append("The answer has no [SEG]: no mask.")
        return self.show_answer(session, prompt, result, clamp_opacity(opacity), notices)

    def show_answer(self, session: Session, prompt: str, result, opacity: float, notices):
        import gradio as gr

        session.history = result.history
        session.masks = result.masks
        session.turns += 1
        session.messages = [
            *session.messages,
            {"role": "user", "content": html.escape(prompt)},
            {
                "role": "assistant",
                "content": answer_html(result.text, len(result.masks)) or "<em>(no answer)</em>",
            },
        ]
        files = self.write_downloads(session, prompt, result, opacity)
        session.masks_saved += len(result.masks)
        pieces = split_answer(result.text, len(result.masks))
        answer = gr.HighlightedText(
            value=[(piece, None if mask is None else mask_label(mask)) for piece, mask in pieces],
            color_map={mask_label(i): hex_color(i) for i in range(len(result.masks))},
        )
        overlay = files[-2]
        notice = " ".join(page_message(n) for n in notices)
        return session.messages, overlay, answer, files, notice, "", session

    def write_downloads(self, session: Session, prompt: str, result, opacity: float) -> list[str]:
        """One PNG per mask (0 or 255), the overlay PNG and the JSON, in a fresh folder."""
        if session.download_dir:
            shutil.rmtree(session.download_dir, ignore_errors=True)
        folder = self.downloads_root / uuid.uuid4().hex
        folder.mkdir(parents=True)
        session.download_dir = str(folder)
        stem, turn = safe_stem(session.image_name), session.turns
        mask_files = []
        for offset, mask in enumerate(result.masks):
            path = folder / f"{stem}_mask_{session.masks_saved + offset}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(path)
            mask_files.append(path)
        overlay_file = folder / f"{stem}_overlay_{turn}.png"
        Image.fromarray(overlay_masks(session.pixels, result.masks, opacity)).save(overlay_file)
        json_file = folder / f"{stem}_answer_{turn}.json"
        document = result_document(
            prompt=prompt,
            image=session.image_name,
            answer=result.text,
            masks=result.masks,
            mask_paths=[p.name for p in mask_files],
            overlay_paths=[overlay_file.name] * len(mask_files),
            rle=True,
        )
        write_json(json_file, document)
        return [str(p) for p in (*mask_files, overlay_file, json_file)]

    def redraw(self, opacity: float, session: Session):
        """The overlay at another opacity (the last answer's masks)."""
        if session.pixels is None:
            return None
        return overlay_masks(session.pixels, session.masks, clamp_opacity(opacity))

    def reset(self, session: Session):
        session.restart()
        notice = "New conversation: the next question starts without history."
        return [], None, None, None, notice, "", session


# --- the page -------------------------------------------------------------------------------------

INTRO = """\
# LISA: reasoning segmentation

Upload or paste an image (or pick an example), ask about it and press **Send**. Each `[SEG]` of
the answer is one mask, drawn in its own colour on the image and marked in the same colour in the
answer. A follow-up question about the same image continues the conversation; a new image, or
**Reset**, starts a new one. Images up to {max_file_size} and about 179 megapixels (Pillow's
decompression limit); a side longer than {max_side} pixels is scaled down to it.

Model: `{model}`
"""

CSS = """
.seg-mark { font-weight: 600; }
#image-input img, #overlay img { width: 100%; height: 100%; object-fit: contain; }
"""


def theme():
    """gradio's default look with the browser's own fonts: the page loads nothing from outside."""
    import gradio as gr

    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


@dataclass
class Page:
    """The page's components that the handlers read or write."""

    image: object
    prompt: object
    send: object
    reset: object
    overlay: object
    opacity: object
    chat: object
    answer: object
    notice: object
    downloads: object


def question_column():
    """The image, the prompt box, Send and Reset."""
    import gradio as gr

    image = gr.Image(
        label="Image",
        type="filepath",
        image_mode=None,
        sources=["upload", "clipboard"],
        height=IMAGE_HEIGHT,
        elem_id="image-input",
    )
    prompt = gr.Textbox(
        label="Prompt",
        placeholder="Where is the dog's tail? Please output segmentation mask.",
        lines=1,  # Enter sends; the box grows with a longer (pasted) prompt
        max_lines=12,
        elem_id="prompt",
    )
    with gr.Row():
        send = gr.Button("Send", variant="primary", elem_id="send")
        reset = gr.Button("Reset", elem_id="reset")
    return image, prompt, send, reset


def page_layout(examples: list[Example]) -> Page:
    """Question and masks side by side, then the conversation beside the answer's details."""
    import gradio as gr

    with gr.Row(equal_height=False):
        with gr.Column():
            image, prompt, send, reset = question_column()
        with gr.Column():
            overlay = gr.Image(
                label="Masks",
                format="png",
                interactive=False,
                height=IMAGE_HEIGHT,
                elem_id="overlay",
            )
            opacity = gr.Slider(
                0.0,
                1.0,
                value=DEFAULT_OPACITY,
                step=0.05,
                label="Mask opacity",
                elem_id="opacity",
            )
    with gr.Row(equal_height=False):
        chat = gr.Chatbot(
            label="Conversation",
            elem_id="chat",
            buttons=["copy"],
            feedback_options=None,
            height=300,
            scale=3,
        )
        with gr.Column(scale=2):
            answer = gr.HighlightedText(
                label="Answer", show_legend=True, interactive=False, elem_id="answer"
            )
            notice = gr.Markdown(elem_id="notice")
            downloads = gr.File(
                label="Downloads: masks (PNG), overlay, answer (JSON with COCO RLE)",
                file_count="multiple",
                interactive=False,
                elem_id="downloads",
            )
    if examples:
        gr.Examples(
            examples=[[str(e.image), e.prompt] for e in examples],
            inputs=[image, prompt],
            label="Examples (click one, then Send)",
            elem_id="examples",
        )
    return Page(image, prompt, send, reset, overlay, opacity, chat, answer, notice, downloads)


def build_demo(app: DemoApp, examples: list[Example], model_name: str):
    """The page and its events; the model's requests share one queue slot."""
    import gradio as gr

    intro = INTRO.format(
        max_file_size=MAX_FILE_SIZE.upper(), max_side=app.max_image_side, model=model_name
    )
    # uploads and answers' files are deleted hourly once as old as a conversation may get
    cache = (3600, SESSION_SECONDS)
    with gr.Blocks(title="LISA demo", analytics_enabled=False, delete_cache=cache) as demo:
        # gradio drops a tab's state when the tab closes, or SESSION_SECONDS after its last use
        session = gr.State(Session(), time_to_live=SESSION_SECONDS, delete_callback=Session.restart)
        gr.Markdown(intro)
        page = page_layout(examples)
        outputs = [
            page.chat,
            page.overlay,
            page.answer,
            page.downloads,
            page.notice,
            page.prompt,
            session,
        ]
        for trigger, api_name in ((page.send.click, "ask"), (page.prompt.submit, "submit")):
            trigger(
                app.ask,
                inputs=[page.image, page.prompt, page.opacity, session],
                outputs=outputs,
                api_name=api_name,
                preprocess=False,  # the image file is read by the segmenter, as in chat.py
                concurrency_id="model",
                concurrency_limit=1,
            )
        page.reset.click(app.reset, inputs=[session], outputs=outputs, api_name="reset")
        page.opacity.release(
            app.redraw, inputs=[page.opacity, session], outputs=[page.overlay], api_name="redraw"
        )
    return demo


def check_port_free(host: str, port: int) -> None:
    """Raises OSError when nothing can listen on host:port (before the model loads for minutes)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        check_port_free(args.host, args.port)
    except OSError as error:
        raise SystemExit(
            f"app.py: cannot serve on --host {args.host} --port {args.port}: {error.strerror or error}"
        ) from None
    try:
        examples, examples_dir = examples_for(args)
    except ValueError as error:
        raise SystemExit(f"app.py: {error}") from None
    quiet_libraries()
    print(f"Loading {args.version} ...", flush=True)
    try:
        segmenter = load_segmenter(SegmenterSettings.from_flags(args))
    except ModelLoadError as error:
        raise SystemExit(f"app.py: {error}") from None
    with tempfile.TemporaryDirectory(prefix="lisa_demo_") as downloads_root:
        app = DemoApp(
            segmenter, max_image_side=args.max_image_side, downloads_root=Path(downloads_root)
        )
        demo = build_demo(app, examples, args.version)
        demo.queue(max_size=args.queue_size, default_concurrency_limit=1)
        demo.launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=MAX_FILE_SIZE,
            allowed_paths=[str(examples_dir)] if examples_dir else None,
            theme=theme(),
            css=CSS,
            footer_links=["api"],
            ssr_mode=False,
            quiet=True,
            prevent_thread_lock=True,
        )
        print(f"The demo is on http://{args.host}:{args.port} (Ctrl-C stops it).", flush=True)
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
