"""Inpainting quality of the local providers' models on images bundled with scikit-image.

Holes of known content are cut into real photos and into texture photographs (a
square, thin scratches, a random blob; 5-10 % of each image), filled by each model of
the OpenCV and PatchMatch providers through their public ``run``, and scored inside
the hole only: PSNR over the hole's pixels, the mean of SSIM's full map over them, and
*detail*, the fill's fine-detail energy (mean squared Laplacian of the grey image) as a
fraction of the original's. A flat fill with the mean colour around the hole is the
baseline a model must beat. Everything is deterministic and offline.

Run ``python -m bench.quality`` to print the table.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from contextlib import aclosing
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from retouch.providers.opencv import OpenCVProvider
from retouch.providers.patchmatch import PatchMatchProvider
from retouch.sdk import InpaintRequest, JobContext, Provider, Result

Image = NDArray[np.uint8]

BASELINE = "flat fill (baseline)"


def _gray_to_rgb(gray: Image) -> Image:
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))


PHOTOS: dict[str, Callable[[], Image]] = {
    "astronaut": data.astronaut,
    "camera": lambda: _gray_to_rgb(data.camera()),  # type: ignore[no-untyped-call]
    "coffee": data.coffee,
    "chelsea": data.chelsea,
    "rocket": data.rocket,
}
"""Photos shipped inside scikit-image's wheel: nothing is downloaded."""

TEXTURES: dict[str, Callable[[], Image]] = {
    "brick": lambda: _gray_to_rgb(data.brick()),  # type: ignore[no-untyped-call]
    "grass": lambda: _gray_to_rgb(data.grass()),  # type: ignore[no-untyped-call]
    "gravel": lambda: _gray_to_rgb(data.gravel()),  # type: ignore[no-untyped-call]
}
"""Texture photographs shipped with scikit-image: regular (brick) and stochastic
(grass, gravel). On stochastic texture no method can recover the lost pixels, so PSNR
and SSIM favour a blur; *detail* shows whether the fill looks like the texture."""


def square_mask(height: int, width: int, rng: np.random.Generator) -> Image:
    """One square covering about 6 % of the image, away from the borders."""
    side = int(math.sqrt(0.06 * height * width))
    top = int(rng.integers(height // 8, height - side - height // 8))
    left = int(rng.integers(width // 8, width - side - width // 8))
    mask = np.zeros((height, width), np.uint8)
    mask[top : top + side, left : left + side] = 255
    return mask


def scratch_mask(height: int, width: int, rng: np.random.Generator) -> Image:
    """Thin lines (3 px) drawn across the image until they cover about 5 %."""
    mask = np.zeros((height, width), np.uint8)
    while np.count_nonzero(mask) < 0.05 * height * width:
        x0, x1 = rng.integers(0, width, 2)
        y0, y1 = rng.integers(0, height, 2)
        cv2.line(mask, (int(x0), int(y0)), (int(x1), int(y1)), 255, thickness=3)
    return mask


def blob_mask(height: int, width: int, rng: np.random.Generator) -> Image:
    """One irregular blob covering about 8 %: a circle with a wobbly radius."""
    radius = math.sqrt(0.08 * height * width / math.pi)
    cy = rng.uniform(0.35, 0.65) * height
    cx = rng.uniform(0.35, 0.65) * width
    angles = np.linspace(0.0, 2.0 * math.pi, 90, endpoint=False)
    wobble = sum(
        rng.uniform(0.05, 0.15) * np.sin(k * angles + rng.uniform(0, 2 * math.pi))
        for k in range(2, 6)
    )
    r = radius * (1.0 + wobble)
    points = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.rint(points).astype(np.int32)], 255)
    return mask


MASKS: dict[str, Callable[[int, int, np.random.Generator], Image]] = {
    "square": square_mask,
    "scratches": scratch_mask,
    "blob": blob_mask,
}


@dataclass(frozen=True, slots=True)
class Score:
    """One method's result on one photo and mask."""

    psnr: float
    ssim: float
    detail: float
    seconds: float


def hole_psnr(original: Image, filled: Image, mask: Image) -> float:
    """PSNR (dB) over the masked pixels only."""
    hole = mask > 0
    psnr = peak_signal_noise_ratio(original[hole], filled[hole], data_range=255)  # type: ignore[no-untyped-call]
    return float(psnr)


def hole_ssim(original: Image, filled: Image, mask: Image) -> float:
    """SSIM's full map, averaged over the masked pixels and the three channels."""
    _, ssim_map = structural_similarity(  # type: ignore[no-untyped-call]
        original, filled, channel_axis=2, data_range=255, full=True
    )
    return float(np.mean(ssim_map[mask > 0]))


def hole_detail(original: Image, filled: Image, mask: Image) -> float:
    """Fine-detail energy (mean squared Laplacian of the grey image) inside the hole,
    as a fraction of the original's: near 0 for a blur, near 1 for a fill as detailed
    as what it replaces."""

    def energy(image: Image) -> float:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
        laplacian = cv2.Laplacian(gray, cv2.CV_32F)
        return float(np.mean(laplacian[mask > 0] ** 2))

    return energy(filled) / max(energy(original), 1e-9)


def score(original: Image, filled: Image, mask: Image, seconds: float) -> Score:
    """Every figure for one filled image."""
    return Score(
        hole_psnr(original, filled, mask),
        hole_ssim(original, filled, mask),
        hole_detail(original, filled, mask),
        seconds,
    )


def flat_fill(image: Image, mask: Image) -> Image:
    """The baseline: the hole filled with the mean colour of a ring around it."""
    hole = mask > 0
    ring = (cv2.dilate(mask, np.ones((7, 7), np.uint8)) > 0) & ~hole
    out = image.copy()
    out[hole] = np.rint(image[ring].mean(axis=0)).astype(np.uint8)
    return out


async def _inpaint(provider: Provider, image: Image, mask: Image, model: str) -> Image:
    request = InpaintRequest(image, mask, model, seed=0)
    async with aclosing(provider.run(request, JobContext("bench-quality"))) as events:
        async for event in events:
            if isinstance(event, Result):
                return event.image
    raise AssertionError(f"model {model!r} produced no result")


Results = dict[tuple[str, str], dict[str, Score]]


async def _measure(images: dict[str, Callable[[], Image]], seed_base: int) -> Results:
    providers: list[Provider] = [OpenCVProvider(), PatchMatchProvider()]
    for provider in providers:
        await provider.start({"max_workers": 1})
    try:
        rows: Results = {}
        for photo_index, (photo_name, load) in enumerate(images.items()):
            image = np.ascontiguousarray(load())
            height, width = image.shape[:2]
            for mask_index, (mask_name, make_mask) in enumerate(MASKS.items()):
                rng = np.random.default_rng(seed_base + 1000 * photo_index + mask_index)
                mask = make_mask(height, width, rng)
                scores: dict[str, Score] = {}
                for provider in providers:
                    for model in provider.manifest.models:
                        started = time.perf_counter()
                        filled = await _inpaint(provider, image, mask, model)
                        seconds = time.perf_counter() - started
                        scores[model] = score(image, filled, mask, seconds)
                started = time.perf_counter()
                flat = flat_fill(image, mask)
                scores[BASELINE] = score(image, flat, mask, time.perf_counter() - started)
                coverage = np.count_nonzero(mask) / mask.size
                rows[(f"{photo_name} {width}x{height}", f"{mask_name} {coverage:.1%}")] = scores
        return rows
    finally:
        for provider in providers:
            await provider.aclose()


def _summary(results: Results) -> list[str]:
    methods = list(next(iter(results.values())))
    lines = [
        "| method | "
        + " | ".join(f"{kind} PSNR / SSIM / detail" for kind in MASKS)
        + " | all PSNR / SSIM / detail | mean ms / image |",
        "|---|" + "---:|" * (len(MASKS) + 2),
    ]
    for method in methods:
        cells = []
        for kind in [*MASKS, ""]:
            picked = [row[method] for (_, mask), row in results.items() if mask.startswith(kind)]
            psnr = np.mean([s.psnr for s in picked])
            ssim = np.mean([s.ssim for s in picked])
            detail = np.mean([s.detail for s in picked])
            cells.append(f"{psnr:.2f} / {ssim:.3f} / {detail:.2f}")
        seconds = np.mean([row[method].seconds for row in results.values()])
        lines.append(f"| {method} | {' | '.join(cells)} | {1000 * seconds:.1f} |")
    return lines


def _per_image(results: Results) -> list[str]:
    methods = list(next(iter(results.values())))
    header = " | ".join(f"{method} PSNR / SSIM / ms" for method in methods)
    lines = [f"| image | mask | {header} |", "|---|---|" + "---:|" * len(methods)]
    for (photo, mask), row in results.items():
        cells = [f"{s.psnr:.2f} / {s.ssim:.3f} / {1000 * s.seconds:.1f}" for s in row.values()]
        lines.append(f"| {photo} | {mask} | {' | '.join(cells)} |")
    return lines


def run_quality_bench() -> str:
    """Measure every model on every photo, texture and mask; return markdown."""
    photos = asyncio.run(_measure(PHOTOS, 0))
    textures = asyncio.run(_measure(TEXTURES, 7))
    lines = [
        "### Inpainting quality (OpenCV and PatchMatch providers)",
        "",
        f"{len(PHOTOS)} photos ({', '.join(PHOTOS)}) and {len(TEXTURES)} texture "
        f"photographs ({', '.join(TEXTURES)}) bundled with scikit-image x {len(MASKS)} "
        "masks (a square, 3 px scratches, a random blob; 5-10 % of the image). Scores "
        "are taken inside the hole only: PSNR over the hole's pixels, SSIM as the mean "
        "of the full SSIM map (7x7 window, per channel) over them, higher is better; "
        "*detail* is the fill's fine-detail energy (squared Laplacian) as a fraction of "
        "the original's, where near 0 means a blur and near 1 as much texture as the "
        "original. Time is one job end to end through the provider's `run`, one worker "
        "thread. telea and ns are the OpenCV provider's models (cv2.xphoto is not part "
        "of opencv-python-headless); patchmatch is the PatchMatch provider's exemplar "
        "fill.",
        "",
        "Photos:",
        "",
        *_summary(photos),
        "",
        "Textures (on grass and gravel no method can recover the lost pixels, so PSNR "
        "and SSIM reward a blur; detail tells whether the fill looks like texture):",
        "",
        *_summary(textures),
        "",
        *_per_image({**photos, **textures}),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run_quality_bench())
