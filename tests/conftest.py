"""Shared fixtures: the reference data of the original implementation, found through
LISA_REFERENCE_DIR (default ../shared/reference beside the clone).

Tests that need it are marked ``reference``. Without the data they skip with the reason, unless
LISA_REQUIRE_REFERENCE=1 (set by .ci/run), where a missing reference is an error.
"""

import os
from pathlib import Path

import pytest

# No test may reach the network: the machines running them have no model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    return Path(os.environ.get("LISA_REFERENCE_DIR", REPO_ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    path = reference_dir()
    if not (path / "README.md").is_file():
        message = (
            f"reference data not found at {path} (set LISA_REFERENCE_DIR to the folder that holds "
            "tiny_lisa/, tiny_cases/ and full_size_keys/)"
        )
        if os.environ.get("LISA_REQUIRE_REFERENCE") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tiny_lisa_dir(reference: Path) -> Path:
    return reference / "tiny_lisa"


@pytest.fixture(scope="session")
def tiny_cases_dir(reference: Path) -> Path:
    return reference / "tiny_cases"


@pytest.fixture(scope="session")
def load_reference_segmenter(tiny_lisa_dir: Path):
    """Loads the reference tiny LISA as a segmenter (fp32, its CLIP beside it) answering with
    at most ``max_new_tokens`` tokens; ``options``: more of LisaSegmenter.from_pretrained's."""
    from model.segmenter import LisaSegmenter

    def load(max_new_tokens: int, **options) -> LisaSegmenter:
        return LisaSegmenter.from_pretrained(
            tiny_lisa_dir,
            vision_tower=str(tiny_lisa_dir / "clip"),
            precision="fp32",
            max_new_tokens=max_new_tokens,
            **options,
        )

    return load
