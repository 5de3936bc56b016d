"""Web demo speed: start-up to the first served page, and one request, as a user waits for them.

Starts ``python app.py`` as a real server, and prints:
  - start-up: seconds from launching the process to the first page served on /
    (imports, model loading, building the page, gradio's server);
  - one request through gradio_client (upload, queue, the model, the overlay, mask PNGs and the
    JSON, the files back): the first one, and the best of --repeats after it;
  - the same image and prompt through LisaSegmenter in this process, the model's share of it.

The default model is the quick start's (bash quickstart.sh), asked about its first toy val image
with that image's request, as the page's first example does.

    python benchmarks/bench_app.py [--run runs/quickstart] [--repeats 5]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import app  # noqa: E402
from utils.distributed import free_port  # noqa: E402


def wait_for_page(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"bench_app.py: app.py ended with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.05)
    raise SystemExit(f"bench_app.py: no page at {url} within {timeout} s")


def time_requests(url: str, image: Path, prompt: str, repeats: int) -> tuple[float, float]:
    """(first request, best of the next ``repeats``) in seconds; each starts a new conversation."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=tempfile.mkdtemp(prefix="bench_app_"))
    times = []
    for _ in range(repeats + 1):
        client.predict(api_name="/reset")
        start = time.perf_counter()
        client.predict(handle_file(str(image)), prompt, 0.5, api_name="/ask")
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:])


def time_segmenter(version: Path, image: Path, prompt: str, repeats: int) -> float:
    from model.segmenter import LisaSegmenter

    segmenter = LisaSegmenter.from_pretrained(version, precision="fp32", device="cpu")
    segmenter(str(image), prompt)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter(str(image), prompt)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "quickstart")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    version = args.run / "model"
    val = args.run / app.QUICKSTART_VAL
    if not version.is_dir() or not val.is_dir():
        raise SystemExit(f"bench_app.py: no quick start run in {args.run} (bash quickstart.sh)")
    image = sorted(val.glob("*.jpg"))[0]
    prompt = app.example_prompt(image)

    url = f"http://127.0.0.1:{free_port()}/"
    command = [sys.executable, "app.py", "--version", str(version), "--precision", "fp32"]
    start = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--port", url.rsplit(":", 1)[1].strip("/")],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_page(url, process, args.timeout)
        startup = time.perf_counter() - start
        first, best = time_requests(url, image, prompt, args.repeats)
    finally:
        process.terminate()
        process.wait(timeout=30)
    model_only = time_segmenter(version, image, prompt, args.repeats)

    print(f"model: {version}  image: {image.name}  prompt: {prompt!r}")
    print(f"start-up to the first served page: {startup:6.2f} s")
    print(f"one request, first:                {first:6.3f} s")
    print(f"one request, best of {args.repeats}:           {best:6.3f} s")
    print(f"LisaSegmenter alone, best of {args.repeats}:   {model_only:6.3f} s")


if __name__ == "__main__":
    main()
