"""Shared fixtures: the real test data beside the checkout, and small synthetic inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not found at {path} (the shared data set lives beside the checkout)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return _need(SHARED / "faces")


@pytest.fixture(scope="session")
def videos_dir() -> Path:
    return _need(SHARED / "videos")


@pytest.fixture(scope="session")
def face_photo(faces_dir: Path) -> np.ndarray:
    """A frontal photo with one clear face, RGB."""
    for person in sorted(p for p in faces_dir.iterdir() if p.is_dir()):
        for photo in sorted(person.iterdir()):
            image = cv2.imread(str(photo))
            if image is not None and min(image.shape[:2]) >= 300:
                return np.ascontiguousarray(image[:, :, ::-1])
    pytest.skip("no photo of at least 300x300 pixels in the face set")


@pytest.fixture(scope="session")
def short_clip(videos_dir: Path) -> Path:
    clips = sorted(videos_dir.glob("*.mp4"))
    if not clips:
        pytest.skip(f"no clips in {videos_dir}")
    return min(clips, key=lambda p: p.stat().st_size)
