"""app.py, the web demo, through gradio_client against real servers on 127.0.0.1.

Two servers: the tiny reference checkpoint (its answers are compared with LisaSegmenter's for
the same image and prompt), and a tiny model built here whose every answer is a row of [SEG]s
(several masks, several colours) and whose tokenizer falls back to bytes.
"""

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError
from PIL import Image

import app
from model.segmenter import LisaSegmenter
from utils.answer_display import hex_color, mask_label, overlay_masks
from utils.distributed import free_port
from utils.mask_rle import decode_rle
from utils.transforms import load_image

from .app_server import build_seg_model, start_app, stop_app

RED_CIRCLE = "Can you segment the red circle in this image?"
MAX_NEW_TOKENS = "16"
MAX_IMAGE_SIDE = 512  # the reference server's --max_image_side (small, so the test image is too)


# --- servers and clients ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_model_args(tiny_lisa_dir):
    return ["--version", str(tiny_lisa_dir), "--vision-tower", str(tiny_lisa_dir / "clip")]


@pytest.fixture(scope="module")
def reference_server(reference_model_args, tmp_path_factory):
    log = tmp_path_factory.mktemp("reference_app") / "server.log"
    server = start_app(
        [*reference_model_args, "--precision", "fp32", "--max_new_tokens", MAX_NEW_TOKENS]
        + ["--max_image_side", str(MAX_IMAGE_SIDE)],
        log,
    )
    yield server
    stop_app(server)


@pytest.fixture(scope="module")
def ref_images(tiny_cases_dir):
    """The reference cases' pictures: the tiny reference model says [SEG] about img1."""
    return {name: tiny_cases_dir / f"{name}.png" for name in ("img1", "img2")}


@pytest.fixture(scope="module")
def reference_segmenter(load_reference_segmenter):
    return load_reference_segmenter(int(MAX_NEW_TOKENS))


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    return build_seg_model(tmp_path_factory.mktemp("seg_model"))


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory, pictures):
    """Three example images: with a sentence annotation, with none, with a broken one."""
    folder = tmp_path_factory.mktemp("examples")
    for name in ("a_sentence", "b_plain", "c_broken"):
        (folder / f"{name}.png").write_bytes(pictures["shapes.png"].read_bytes())
    annotation = {"text": ["the shape a banana would match"], "is_sentence": True, "shapes": []}
    (folder / "a_sentence.json").write_text(json.dumps(annotation))
    (folder / "c_broken.json").write_text("{not json")
    (folder / "notes.txt").write_text("not an example")
    return folder


@pytest.fixture(scope="module")
def seg_server(seg_model, examples_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("seg_app") / "server.log"
    server = start_app(
        ["--version", str(seg_model), "--precision", "fp32", "--max_new_tokens", "4"]
        + ["--examples", str(examples_dir), "--queue_size", "1"],
        log,
    )
    yield server
    stop_app(server)


def shapes_picture(width: int, height: int, color: tuple[int, int, int]) -> Image.Image:
    pixels = np.full((height, width, 3), 230, dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    pixels[(rows - height / 2) ** 2 + (cols - width / 3) ** 2 < (height / 4) ** 2] = color
    return Image.fromarray(pixels)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Pictures in every layout a user may upload, and files that are no pictures."""
    folder = tmp_path_factory.mktemp("images")
    shapes_picture(320, 240, (220, 30, 30)).save(folder / "shapes.png")
    cases = {"shapes.png": folder / "shapes.png"}
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    odd = {
        "one_pixel.png": Image.fromarray(picture[:1, :1]),
        "grey.png": Image.fromarray(picture[:, :, 0], mode="L"),
        "rgba.png": Image.fromarray(np.dstack([picture, picture[:, :, :1]]), mode="RGBA"),
        "deep.png": Image.fromarray(picture[:, :, 0].astype(np.uint16) * 257, mode="I;16"),
        "large.png": Image.fromarray(np.repeat(np.repeat(picture, 40, 0), 40, 1)),  # 2400x1600
        "narrow.png": Image.fromarray(np.zeros((3000, 1, 3), dtype=np.uint8)),
    }
    for name, image in odd.items():
        image.save(folder / name)
        cases[name] = folder / name
    rotated = folder / "rotated.jpg"  # stored 60x40, shown upright as 40x60
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(picture).save(rotated, exif=exif, quality=95)
    cases["rotated.jpg"] = rotated
    (folder / "notes.png").write_text("these are notes, not a picture")
    (folder / "empty.png").write_bytes(b"")
    good = (folder / "grey.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    for name in ("notes.png", "empty.png", "truncated.png"):
        cases[name] = folder / name
    return cases


def connect(server, folder: Path) -> Client:
    folder.mkdir(parents=True, exist_ok=True)
    return Client(server.url, verbose=False, download_files=str(folder))


@dataclass
class Reply:
    """The page after one Send, as a client sees it."""

    chat: list[dict]
    overlay: Path
    answer: dict
    downloads: list[Path]
    notice: str
    prompt_box: str

    @property
    def answer_text(self) -> str:
        return "".join(item["token"] for item in self.answer["value"])

    @property
    def masks(self) -> list[np.ndarray]:
        files = sorted(
            (p for p in self.downloads if "_mask_" in p.name),
            key=lambda p: int(p.stem.rsplit("_", 1)[1]),
        )
        return [np.asarray(Image.open(p)) > 127 for p in files]

    @property
    def document(self) -> dict:
        (path,) = [p for p in self.downloads if p.suffix == ".json"]
        return json.loads(path.read_text(encoding="utf-8"))

    def overlay_pixels(self) -> np.ndarray:
        return np.asarray(Image.open(self.overlay).convert("RGB"))


def ask(client: Client, image, prompt: str, opacity: float = 0.5) -> Reply:
    upload = None if image is None else handle_file(str(image))
    chat, overlay, answer, downloads, notice, prompt_box = client.predict(
        upload, prompt, opacity, api_name="/ask"
    )
    return Reply(
        chat, Path(overlay), answer, [Path(p) for p in downloads or []], notice, prompt_box
    )


def shown_text(message: dict) -> str:
    """A chat message's text as the page shows it (tags dropped, entities decoded)."""
    content = message["content"]
    raw = "".join(part["text"] for part in content) if isinstance(content, list) else content
    return html.unescape(re.sub(r"<[^>]+>", "", raw))


def check_reply_matches(reply: Reply, expected, image_path: Path, opacity: float = 0.5) -> None:
    """Answer, masks, overlay and JSON of the page equal the segmenter's result."""
    assert reply.answer_text == expected.text
    assert shown_text(reply.chat[-1]) == expected.text
    assert len(reply.masks) == len(expected.masks)
    for shown, mask in zip(reply.masks, expected.masks, strict=True):
        assert (shown == mask).all()
    document = reply.document
    assert document["answer"] == expected.text and document["image"] == image_path.name
    for entry, mask in zip(document["masks"], expected.masks, strict=True):
        assert (decode_rle(entry["rle"]) == mask).all()
        assert entry["area"] == int(mask.sum()) and entry["size"] == list(mask.shape)
    upright = load_image(image_path)
    assert (reply.overlay_pixels() == overlay_masks(upright, expected.masks, opacity)).all()


# --- answers equal the segmenter's ----------------------------------------------------------


@pytest.mark.reference
def test_answer_masks_and_json_equal_the_segmenter(
    reference_server, reference_segmenter, ref_images, tmp_path
):
    client = connect(reference_server, tmp_path)
    reply = ask(client, ref_images["img1"], RED_CIRCLE)
    expected = reference_segmenter(str(ref_images["img1"]), RED_CIRCLE)
    assert expected.masks, "the reference answer has a [SEG]"
    check_reply_matches(reply, expected, ref_images["img1"])
    assert reply.document["prompt"] == RED_CIRCLE
    assert [m["role"] for m in reply.chat] == ["user", "assistant"]
    assert shown_text(reply.chat[0]) == RED_CIRCLE
    assert reply.prompt_box == ""  # the prompt box is cleared for the next question
    assert "New conversation about img1.png (320x240)" in reply.notice


@pytest.mark.reference
def test_a_follow_up_continues_and_a_new_image_restarts(
    reference_server, reference_segmenter, ref_images, tmp_path
):
    client = connect(reference_server, tmp_path)
    first = ask(client, ref_images["img1"], RED_CIRCLE)
    follow_up = ask(client, ref_images["img1"], "And the one beside it?", opacity=0.8)
    earlier = reference_segmenter(str(ref_images["img1"]), RED_CIRCLE)
    expected = reference_segmenter(
        str(ref_images["img1"]), "And the one beside it?", history=earlier.history
    )
    check_reply_matches(follow_up, expected, ref_images["img1"], opacity=0.8)
    assert [shown_text(m) for m in follow_up.chat] == [
        RED_CIRCLE,
        earlier.text,
        "And the one beside it?",
        expected.text,
    ]
    assert first.notice and "New conversation" not in follow_up.notice
    # mask files are numbered across the conversation, as chat.py numbers them
    first_names = {p.name for p in first.downloads}
    assert not first_names & {p.name for p in follow_up.downloads}

    other = ask(client, ref_images["img2"], RED_CIRCLE)
    check_reply_matches(
        other, reference_segmenter(str(ref_images["img2"]), RED_CIRCLE), ref_images["img2"]
    )
    assert len(other.chat) == 2 and "New conversation about img2.png" in other.notice


@pytest.mark.reference
def test_two_clients_keep_their_own_conversations(reference_server, ref_images, tmp_path):
    alice = connect(reference_server, tmp_path / "alice")
    bob = connect(reference_server, tmp_path / "bob")
    upload = handle_file(str(ref_images["img1"]))
    # sent together: the queue takes them through the model one after the other
    jobs = [
        alice.submit(upload, "Alice asks first.", 0.5, api_name="/ask"),
        bob.submit(upload, "Bob asks first.", 0.5, api_name="/ask"),
    ]
    for job in jobs:
        job.result(timeout=300)
    alice_chat = ask(alice, ref_images["img1"], "Alice asks again.").chat
    bob_chat = ask(bob, ref_images["img1"], "Bob asks again.").chat
    assert [shown_text(m) for m in alice_chat[::2]] == ["Alice asks first.", "Alice asks again."]
    assert [shown_text(m) for m in bob_chat[::2]] == ["Bob asks first.", "Bob asks again."]


def test_send_and_enter_share_one_queue_slot_for_the_model(tmp_path):
    page = app.DemoApp(None, max_image_side=64, downloads_root=tmp_path)
    demo = app.build_demo(page, [], "a model")
    model_events = [fn for fn in demo.fns.values() if fn.api_name in ("ask", "submit")]
    assert len(model_events) == 2 and all(fn.queue for fn in model_events)
    assert {fn.concurrency_limit for fn in model_events} == {1}
    assert len({fn.concurrency_id for fn in model_events}) == 1


@pytest.mark.reference
def test_reset_forgets_and_the_opacity_slider_redraws(
    reference_server, reference_segmenter, ref_images, tmp_path
):
    client = connect(reference_server, tmp_path)
    reply = ask(client, ref_images["img1"], RED_CIRCLE)
    expected = reference_segmenter(str(ref_images["img1"]), RED_CIRCLE)
    redrawn = client.predict(1.0, api_name="/redraw")
    upright = load_image(ref_images["img1"])
    solid = np.asarray(Image.open(redrawn).convert("RGB"))
    assert (solid == overlay_masks(upright, expected.masks, 1.0)).all()
    assert (solid != reply.overlay_pixels()).any()
    chat, overlay, answer, downloads, notice, _ = client.predict(api_name="/reset")
    assert chat == [] and overlay is None and not downloads and "New conversation" in notice
    again = ask(client, ref_images["img1"], RED_CIRCLE)
    assert len(again.chat) == 2  # no history after Reset
    check_reply_matches(again, expected, ref_images["img1"])


# --- every prompt goes through; bad input is one message --------------------------------------

PROMPTS_THAT_GO_THROUGH = {
    "chinese": "请分割图中的红色圆形。",
    "digits": "Segment the 3 shapes at 12 o'clock, 2024 edition, No. 42.",
    "punctuation": "What?! (really) [yes] {no} <maybe> 'quote' \"double\" ; : @ # $ % ^ & * / \\ |",
    "emoji": "🐶 Where is the dog? 🦴🦴",
    "only_emoji": "🙂",
    "paragraph": (
        "I took this picture at the park yesterday.\nThere were many shapes on the grass, "
        "some red, some blue, and one of them was a circle that looked like a ball.\n\n"
        "Could you please find the red circle and segment it for me? Thanks a lot!"
    ),
}


@pytest.fixture(scope="module")
def reference_client(reference_server, tmp_path_factory):
    return connect(reference_server, tmp_path_factory.mktemp("client"))


def check_still_serving(client, ref_images, reference_segmenter) -> None:
    client.predict(api_name="/reset")
    reply = ask(client, ref_images["img1"], RED_CIRCLE)
    assert reply.answer_text == reference_segmenter(str(ref_images["img1"]), RED_CIRCLE).text


@pytest.mark.reference
@pytest.mark.parametrize("kind", sorted(PROMPTS_THAT_GO_THROUGH))
def test_every_prompt_goes_through(reference_client, reference_segmenter, ref_images, kind):
    prompt = PROMPTS_THAT_GO_THROUGH[kind]
    reference_client.predict(api_name="/reset")
    reply = ask(reference_client, ref_images["img1"], prompt)
    expected = reference_segmenter(str(ref_images["img1"]), prompt)
    assert reply.answer_text == expected.text
    assert reply.document["prompt"] == prompt
    assert shown_text(reply.chat[0]) == prompt


BAD_INPUTS = {
    # name: (image case or None, prompt, what the message says)
    "no image": (None, RED_CIRCLE, app.NO_IMAGE),
    "empty prompt": ("img1", "", app.EMPTY_PROMPT),
    "blank prompt": ("img1", "  \n\t ", app.EMPTY_PROMPT),
    "prompt too long": (
        "img1",
        "segment " * 600,
        "tokens long, more than --model_max_length=512; shorten it.",
    ),
    "image placeholder": ("img1", "<image> what is this?", "The prompt contains &lt;image&gt;"),
    "not an image": ("notes.png", RED_CIRCLE, "Cannot read image 'notes.png'"),
    "empty file": ("empty.png", RED_CIRCLE, "Cannot read image 'empty.png'"),
    "truncated image": ("truncated.png", RED_CIRCLE, "Cannot read image 'truncated.png'"),
    "too narrow": ("narrow.png", RED_CIRCLE, "Image 'narrow.png' is 1x3000 pixels: too narrow"),
}


@pytest.mark.reference
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_message_and_the_server_goes_on(
    reference_client, reference_segmenter, ref_images, pictures, case
):
    image_case, prompt, message = BAD_INPUTS[case]
    image = None if image_case is None else {**ref_images, **pictures}[image_case]
    with pytest.raises(AppError) as error:
        ask(reference_client, image, prompt)
    text = str(error.value)
    assert message in text
    assert "\n" not in text.strip() and "Traceback" not in text
    check_still_serving(reference_client, ref_images, reference_segmenter)


ODD_IMAGES = ["one_pixel.png", "grey.png", "rgba.png", "deep.png", "rotated.jpg", "large.png"]


@pytest.mark.reference
@pytest.mark.parametrize("name", ODD_IMAGES)
def test_odd_images_are_answered_upright(
    reference_client, reference_segmenter, ref_images, pictures, name
):
    path = pictures[name]
    reply = ask(reference_client, path, RED_CIRCLE, opacity=0.0)
    upright = load_image(path)  # EXIF applied, grey/alpha/16-bit made RGB as chat.py reads them
    if name == "large.png":  # 2400x1600: scaled to --max_image_side, not refused
        assert upright.shape[:2] == (1600, 2400)
        assert "scaled to 512x341" in reply.notice
        upright = app.scale_down(upright, MAX_IMAGE_SIDE)
    if name == "rotated.jpg":
        assert upright.shape[:2] == (60, 40)
    assert (reply.overlay_pixels() == upright).all()  # opacity 0: the picture the model saw
    expected = reference_segmenter(upright, RED_CIRCLE)
    assert reply.answer_text == expected.text
    assert [m.shape for m in reply.masks] == [upright.shape[:2]] * len(expected.masks)
    check_still_serving(reference_client, ref_images, reference_segmenter)


# --- the built model: several [SEG]s, several colours ----------------------------------------


def test_each_seg_has_its_colour_on_the_image_and_in_the_text(
    seg_server, seg_model, pictures, tmp_path
):
    client = connect(seg_server, tmp_path)
    prompt = "请分割 the 2 red circles 🙂!"
    reply = ask(client, pictures["shapes.png"], prompt)
    segmenter = LisaSegmenter.from_pretrained(seg_model, precision="fp32", max_new_tokens=4)
    assert segmenter.tokenizer.unk_token_id not in segmenter.prompt_ids(prompt)  # byte fallback
    expected = segmenter(str(pictures["shapes.png"]), prompt)
    assert len(expected.masks) == 4 and expected.text.count("[SEG]") == 4
    check_reply_matches(reply, expected, pictures["shapes.png"])
    assert reply.document["prompt"] == prompt
    chips = re.findall(
        r'data-mask="(\d+)"[^>]*background-color: (#\w+)', reply.chat[-1]["content"][0]["text"]
    )
    assert chips == [(str(i + 1), hex_color(i)) for i in range(4)]
    labels = [
        item["class_or_confidence"] for item in reply.answer["value"] if item["class_or_confidence"]
    ]
    assert labels == [mask_label(i) for i in range(4)]
    assert reply.answer["color_map"] == {mask_label(i): hex_color(i) for i in range(4)}
    # a follow-up's masks are those of its own [SEG]s, not of the earlier answer's
    follow_up = ask(client, pictures["shapes.png"], "And the other ones?")
    expected = segmenter(
        str(pictures["shapes.png"]), "And the other ones?", history=expected.history
    )
    assert len(expected.masks) == 4
    check_reply_matches(follow_up, expected, pictures["shapes.png"])


def test_requests_beyond_the_queue_size_are_refused_with_a_message(seg_server, pictures, tmp_path):
    clients = [connect(seg_server, tmp_path / str(i)) for i in range(6)]
    upload = handle_file(str(pictures["shapes.png"]))
    jobs = [client.submit(upload, "Where?", 0.5, api_name="/ask") for client in clients]
    refused = 0
    for job in jobs:
        try:
            job.result(timeout=300)
        except QueueError as error:
            assert "Queue is full" in str(error)
            refused += 1
    # one request runs, one waits (--queue_size 1); those sent meanwhile are refused
    assert 1 <= refused <= len(jobs) - 2
    assert len(ask(clients[0], pictures["shapes.png"], "And now?").masks) == 4


def test_example_folder_gives_each_image_its_request(seg_server, tmp_path):
    config = connect(seg_server, tmp_path).config
    (dataset,) = [c for c in config["components"] if c.get("type") == "dataset"]
    samples = dataset["props"]["samples"]
    names = [Path(sample[0]["path"]).name for sample in samples]
    assert names == ["a_sentence.png", "b_plain.png", "c_broken.png"]  # notes.txt is no image
    prompts = [sample[1] for sample in samples]
    assert prompts == [
        "the shape a banana would match Please respond with segmentation mask.",
        app.DEFAULT_PROMPT,
        app.DEFAULT_PROMPT,
    ]
    assert "c_broken.json" in seg_server.output()  # the broken annotation is named at start-up


# --- the command line ----------------------------------------------------------------------------


def test_command_line_mistakes_are_one_line(tmp_path, capsys):
    model = ["--version", str(tmp_path), "--port", str(free_port())]
    with pytest.raises(SystemExit) as exit_info:
        app.main([*model, "--examples", str(tmp_path / "missing")])
    assert exit_info.value.code == f"app.py: --examples {tmp_path / 'missing'} is not a folder"
    with pytest.raises(SystemExit) as exit_info:
        app.main([*model, "--examples", str(tmp_path)])
    assert str(exit_info.value.code).startswith(f"app.py: --examples {tmp_path} holds no image")
    with pytest.raises(SystemExit, match=r"app.py: cannot load --version=.*no config.json"):
        app.main(model)
    with pytest.raises(SystemExit) as exit_info:
        app.main([*model, "--queue_size", "0"])
    assert exit_info.value.code == 2 and "--queue_size must be positive" in capsys.readouterr().err


def test_a_port_in_use_is_named_before_the_model_loads(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            app.main(["--version", str(tmp_path), "--port", str(port)])
    assert str(exit_info.value.code).startswith(
        f"app.py: cannot serve on --host 127.0.0.1 --port {port}:"
    )
