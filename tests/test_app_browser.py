"""app.py in a real headless Chromium, used as a person uses it: upload, type, Send, read the
coloured answer and the overlay, download the JSON, ask a follow-up, two tabs at once.

Chromium is Debian's (packages chromium and chromium-driver). When it is missing, the set-up
installs it (as root with apt-get, as CI runs); where that cannot be done the tests skip and say
why, except under LISA_REQUIRE_BROWSER=1 (set by .ci/run), where they fail.

The README's screenshot, docs/demo.png, is made here from the quick start's model:

    LISA_SCREENSHOT_RUN=runs/quickstart .venv/bin/pytest tests/test_app_browser.py -k readme
"""

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils.answer_display import mask_label, overlay_masks, seg_color
from utils.mask_rle import decode_rle
from utils.transforms import load_image

from .app_server import REPO, build_seg_model, start_app, stop_app

pytestmark = pytest.mark.slow

VIEWPORT = {"width": 1280, "height": 1000}
ANSWER_TIMEOUT_MS = 120_000
MAX_NEW_TOKENS = 3  # the built model answers "[SEG] [SEG] [SEG]": three masks, three colours
SCREENSHOT = REPO / "docs" / "demo.png"


def chromium_executable() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            "apt-get update && apt-get install -y chromium chromium-driver",
            shell=True,
            capture_output=True,
            timeout=1800,
        )
        found = shutil.which("chromium")
    if found is None:
        reason = (
            "Chromium is not installed and cannot be installed here (needs root and apt-get: "
            "apt-get install -y chromium chromium-driver)"
        )
        if os.environ.get("LISA_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def browser():
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Chromium's sandbox refuses to run as root, which is how CI runs
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A folder laid out as the quick start leaves it: model/ and the toy dataset/."""
    from tools.toy_dataset import make_toy_dataset

    run = tmp_path_factory.mktemp("quickstart_like")
    model = build_seg_model(run / "build")
    model.rename(run / "model")
    make_toy_dataset(
        run / "dataset", seed=0, num_train=2, num_val=3, num_test=1, num_refer=5, num_sem_seg=2
    )
    return run


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("browser_app") / "server.log"
    args = ["--version", str(demo_run / "model"), "--precision", "fp32"]
    app = start_app([*args, "--max_new_tokens", str(MAX_NEW_TOKENS)], log)
    yield app
    stop_app(app)


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    tab = context.new_page()
    tab.goto(server.url)
    tab.wait_for_selector("#send")
    yield tab
    context.close()


# --- what a person does and sees --------------------------------------------------------------


def upload(tab, path: Path) -> None:
    tab.set_input_files("#image-input input[type=file]", str(path))
    tab.wait_for_selector("#image-input img")


def send(tab, prompt: str, *, press_enter: bool = False) -> None:
    """Type the prompt, press Send (or Enter) and wait for the answer to appear in the chat."""
    answers = tab.locator("#chat .bot-row").count()
    box = tab.locator("#prompt textarea")
    box.fill("")
    box.press_sequentially(prompt)
    if press_enter:
        box.press("Enter")
    else:
        tab.click("#send")
    tab.wait_for_function(
        f"document.querySelectorAll('#chat .bot-row').length > {answers}",
        timeout=ANSWER_TIMEOUT_MS,
    )
    tab.wait_for_selector("#overlay img")


def chat_lines(tab) -> list[tuple[str, str]]:
    """(who, text) of every chat bubble, as shown."""
    rows = tab.locator("#chat .message-row")
    lines = []
    for index in range(rows.count()):
        row = rows.nth(index)
        who = "user" if "user-row" in (row.get_attribute("class") or "") else "bot"
        lines.append((who, row.locator(".message-content").inner_text().strip()))
    return lines


def chip_colours(tab) -> list[tuple[int, int, int]]:
    """Background colours of the [SEG] marks of the last answer in the chat."""
    styles = (
        tab.locator("#chat .bot-row")
        .last.locator(".seg-mark")
        .evaluate_all("marks => marks.map(mark => getComputedStyle(mark).backgroundColor)")
    )
    return [tuple(int(v) for v in style[4:-1].split(",")) for style in styles]


def shown_image(tab, selector: str) -> np.ndarray:
    """The picture an <img> of the page shows, fetched from its address."""
    source = tab.locator(f"{selector} img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(tab.request.get(source).body())).convert("RGB"))


def download_answer(tab, folder: Path) -> dict:
    with tab.expect_download() as download:
        tab.locator("#downloads a[download$='.json']").click()
    path = folder / download.value.suggested_filename
    download.value.save_as(path)
    return json.loads(path.read_text(encoding="utf-8"))


def toast(tab) -> str:
    """The text of the message box the page shows (and closes it)."""
    tab.wait_for_selector(".toast-body")
    text = tab.locator(".toast-body").last.inner_text()
    tab.locator(".toast-body").last.locator("button").first.click()
    tab.wait_for_selector(".toast-body", state="detached")
    return text


def set_opacity_to_full(tab) -> None:
    slider = tab.locator("#opacity input[type=range]")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    before = tab.locator("#overlay img").get_attribute("src")
    tab.mouse.click(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2)
    tab.wait_for_function(
        f"document.querySelector('#overlay img').getAttribute('src') !== {json.dumps(before)}",
        timeout=ANSWER_TIMEOUT_MS,
    )


# --- tests ----------------------------------------------------------------------------------------


def test_a_person_asks_reads_downloads_and_follows_up(page, demo_run, tmp_path):
    picture = demo_run / "dataset/reason_seg/ReasonSeg/val/val_000001.jpg"
    upload(page, picture)
    prompt = "请分割 the 2 red shapes, please! 🙂"
    send(page, prompt)

    # the answer: one coloured mark per [SEG], the colours of the masks, named in the legend
    colours = chip_colours(page)
    assert colours == [seg_color(i) for i in range(MAX_NEW_TOKENS)]
    legend = page.locator("#answer .legend-item").all_inner_texts()
    assert legend == [mask_label(i) for i in range(MAX_NEW_TOKENS)]
    assert chat_lines(page)[0] == ("user", prompt)
    shown_answer = chat_lines(page)[1][1]
    assert shown_answer.count("[SEG]") == MAX_NEW_TOKENS and "</s>" not in shown_answer

    # the downloaded JSON holds that answer and the masks the overlay shows
    document = download_answer(page, tmp_path)
    assert document["prompt"] == prompt and document["image"] == picture.name
    assert " ".join(document["answer"].split()) == " ".join(shown_answer.split())
    masks = [decode_rle(entry["rle"]) for entry in document["masks"]]
    assert len(masks) == MAX_NEW_TOKENS
    upright = load_image(picture)
    assert (shown_image(page, "#overlay") == overlay_masks(upright, masks, 0.5)).all()
    set_opacity_to_full(page)
    assert (shown_image(page, "#overlay") == overlay_masks(upright, masks, 1.0)).all()

    # a follow-up, sent with Enter, continues the conversation
    send(page, "And the one below it?", press_enter=True)
    lines = chat_lines(page)
    assert [who for who, _ in lines] == ["user", "bot", "user", "bot"]
    assert lines[0][1] == prompt and lines[2][1] == "And the one below it?"

    screenshot = Image.open(io.BytesIO(page.screenshot(animations="disabled")))
    assert screenshot.size == (VIEWPORT["width"], VIEWPORT["height"])
    shown_colours = {tuple(c) for c in np.asarray(screenshot.convert("RGB")).reshape(-1, 3)}
    # at full opacity the masks show their own colours (the last one on top)
    assert seg_color(MAX_NEW_TOKENS - 1) in shown_colours


def test_bad_input_is_one_message_and_the_page_goes_on(page, demo_run, tmp_path):
    picture = demo_run / "dataset/reason_seg/ReasonSeg/val/val_000000.jpg"
    page.locator("#prompt textarea").fill("Where is the square?")
    page.click("#send")
    assert "No image: upload or paste one" in toast(page)

    upload(page, picture)
    page.locator("#prompt textarea").fill("   ")
    page.click("#send")
    assert "The prompt is empty" in toast(page)

    notes = tmp_path / "holiday.png"
    notes.write_text("these are notes, not a picture")
    page.set_input_files("#image-input input[type=file]", str(notes))
    page.locator("#prompt textarea").fill("Where is the square?")
    page.click("#send")
    message = toast(page)
    assert "Cannot read image 'holiday.png'" in message and "Traceback" not in message

    upload(page, picture)
    send(page, "Where is the square?")
    assert chat_lines(page)[0] == ("user", "Where is the square?")
    assert len(chip_colours(page)) == MAX_NEW_TOKENS


def test_two_tabs_keep_their_own_conversations(browser, server, demo_run):
    context = browser.new_context(viewport=VIEWPORT)
    first, second = context.new_page(), context.new_page()
    for tab in (first, second):
        tab.goto(server.url)
        tab.wait_for_selector("#send")
    upload(first, demo_run / "dataset/reason_seg/ReasonSeg/val/val_000002.jpg")
    # the second tab starts from an example: the quick start's toy request fills the prompt
    second.locator("#examples tbody tr").nth(1).click()
    second.wait_for_function("document.querySelector('#prompt textarea').value !== ''")
    second.wait_for_selector("#image-input img")
    request = json.loads(
        (demo_run / "dataset/reason_seg/ReasonSeg/val/val_000001.json").read_text()
    )
    example_prompt = second.locator("#prompt textarea").input_value()
    assert request["text"][0].lower() in example_prompt.lower()
    second.click("#send")
    second.wait_for_selector("#chat .bot-row", timeout=ANSWER_TIMEOUT_MS)
    send(first, "First tab, first question")
    send(second, "Second tab, follow-up")
    send(first, "First tab, follow-up")
    first_asked = [text for who, text in chat_lines(first) if who == "user"]
    second_asked = [text for who, text in chat_lines(second) if who == "user"]
    assert first_asked == ["First tab, first question", "First tab, follow-up"]
    assert second_asked == [example_prompt, "Second tab, follow-up"]
    context.close()


def test_readme_screenshot_of_the_quick_start_model(browser, tmp_path):
    """Regenerates docs/demo.png from a quick start run (LISA_SCREENSHOT_RUN=its folder)."""
    run = os.environ.get("LISA_SCREENSHOT_RUN")
    if not run:
        pytest.skip("set LISA_SCREENSHOT_RUN to a quick start folder to regenerate docs/demo.png")
    server = start_app(
        ["--version", str(Path(run) / "model"), "--precision", "fp32"], tmp_path / "server.log"
    )
    try:
        context = browser.new_context(viewport={"width": 1200, "height": 1200})
        tab = context.new_page()
        tab.goto(server.url)
        tab.wait_for_selector("#send")
        tab.locator("#examples tbody tr").nth(0).click()
        tab.wait_for_function("document.querySelector('#prompt textarea').value !== ''")
        tab.wait_for_selector("#image-input img")
        tab.click("#send")
        tab.wait_for_selector("#chat .seg-mark", timeout=ANSWER_TIMEOUT_MS)
        send(tab, "Please segment the green shape in this image.")
        assert chip_colours(tab) == [seg_color(0)]
        tab.evaluate("window.scrollTo(0, 0)")
        boxes = [tab.locator(f"#{name}").bounding_box() for name in ("chat", "downloads")]
        bottom = max(box["y"] + box["height"] for box in boxes)  # down to the conversation
        png = tab.screenshot(
            animations="disabled", clip={"x": 0, "y": 0, "width": 1200, "height": bottom + 16}
        )
        context.close()
    finally:
        stop_app(server)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    picture = Image.open(io.BytesIO(png)).convert("RGB")
    # a palette of 256 colours keeps the page's look at a third of the size
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        SCREENSHOT, optimize=True
    )
    assert Image.open(SCREENSHOT).size == picture.size
