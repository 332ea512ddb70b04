"""Multi-scale PatchMatch hole filling (Barnes et al. 2009, Wexler et al. 2007), in NumPy.

The hole is filled with pixels copied from elsewhere in the image, chosen so that every
patch (a ``2r+1`` square) overlapping the hole looks like some patch that lies wholly
in the known part. Three ideas make that tractable:

1. **A pyramid.** The image and hole are halved (2x2 box average; a coarse pixel is
   hole if any of its four is) until the hole is at most a few patches thick and small
   enough to search. The coarsest hole starts from a smooth cv2.inpaint (Telea) fill;
   each finer level starts from the coarser level's matches.
2. **A nearest-neighbour field (NNF)** maps each *target* (a patch centre within ``r``
   of the hole) to a *source* (a patch centre whose patch is entirely known). It starts
   random at the coarsest level and is upsampled between levels. PatchMatch improves it
   with *propagation* (a target tries its neighbours' matches, shifted, since
   neighbouring patches tend to match neighbouring patches; we do this for all targets
   at once, with jump steps of 8, 4, 2 and 1 pixels so good matches travel far in one
   pass) and *random search* (it tries random sources around its match, in windows
   halving from the whole level down to one pixel). Patch distance is the sum of
   squared differences (SSD), computed in a PCA subspace of patch space learnt from the
   level's known patches, channel by channel: each feature is one cv2.filter2D, and a
   candidate costs a row gather of a few numbers rather than a gather of a whole patch.
3. **Expectation-maximisation by voting.** Each hole pixel becomes a weighted average
   of what the patches covering it propose for it (the pixel at the same offset in
   each patch's source), weighted by how well each patch matched; then the NNF is
   improved against that new estimate, and so on a few times per level. A plain mean of
   those proposals blurs stochastic texture (grass, gravel) into mush whenever they
   disagree, so the vote moves towards the proposals' dominant mode with two
   mean-shift steps, as Wexler et al. suggest.

Levels whose hole is too large to search within the time budget (large images) only
upsample the NNF and vote, which still copies full-resolution detail from the sources.
Every random choice comes from the generator the caller passes, so equal inputs and
seeds give equal outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from retouch.sdk import ProgressReporter, RGBImage

FloatImage = NDArray[np.float32]
BoolMap = NDArray[np.bool_]
Index = NDArray[np.intp]

_PCA_SAMPLES = 2048
"""Known patches sampled per level to learn the distance subspace."""
_TELEA_RADIUS = 3
_MODE_STEPS = 2
"""Mean-shift steps per vote after the weighted mean."""
_MODE_BANDWIDTH = 0.25
"""Mean-shift kernel variance, as a fraction of the proposals' variance at the pixel."""
_VOTE_CHUNK = 8192
"""Hole pixels voted on at once; bounds the (patch offsets x pixels) temporaries."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Knobs of the algorithm; the defaults are what the provider ships with, chosen on
    bench/quality.py (see the module docstring for the terms).

    ``patch_radius``: patches are ``2r+1`` pixels square. ``features``: principal
    patterns per colour channel that distances are computed over. ``search_budget``:
    most targets a level may have and still be searched; finer levels only vote.
    ``em_iterations``: the most estimate/vote rounds on a level; the finest searched
    level has ``min_em_iterations`` and each coarser one a round more.
    ``search_iterations``: propagation and random-search passes per round.
    ``vote_percentile``: the percentile of the match distances that sets how fast a
    patch's vote weight falls with its distance. ``coarsest_thickness``: the pyramid
    stops once the hole is at most this many patch radii thick.
    """

    patch_radius: int = 3
    features: int = 8
    search_budget: int = 60_000
    em_iterations: int = 6
    min_em_iterations: int = 2
    search_iterations: int = 2
    vote_percentile: float = 75.0
    coarsest_thickness: float = 3.0


@dataclass(slots=True)
class _Level:
    image: FloatImage
    """(h, w, 3): known pixels exact at this scale; hole pixels hold the estimate."""
    hole: BoolMap


def fill(
    image: FloatImage,
    hole: BoolMap,
    *,
    rng: np.random.Generator,
    reporter: ProgressReporter,
    settings: Settings,
    progress: tuple[float, float] = (0.0, 1.0),
    preview: Callable[[FloatImage], RGBImage] | None = None,
) -> FloatImage:
    """Return ``image`` (float32 RGB) with the pixels where ``hole`` is true filled.

    Known pixels come back unchanged. Progress is reported within ``progress``
    (start, end), once per estimate/vote round; the last report of each pyramid level
    carries ``preview`` of that level's estimate, when given.
    """
    r = settings.patch_radius
    if not hole.any():
        return image.copy()
    if hole.all():
        # Nothing to copy from: the only honest answer is a neutral grey.
        return np.full_like(image, 127.5)
    # Whatever lies under the hole must not leak into the answer, even through the
    # pyramid's averages.
    image = np.where(hole[..., None], np.float32(0.0), image).astype(np.float32)
    levels = _pyramid(image, hole, settings)
    plan = [_rounds(depth, levels[depth], settings) for depth in range(len(levels))]
    total = sum(plan)
    start, end = progress
    done = 0

    def step(stage: str, level: _Level | None = None) -> None:
        nonlocal done
        done += 1
        shown = preview(level.image) if preview is not None and level is not None else None
        reporter.report(start + (end - start) * done / total, stage, preview=shown)

    coarsest = levels[-1]
    coarsest.image = _smooth_init(coarsest.image, coarsest.hole)
    nnf: Index | None = None
    weight: FloatImage | None = None
    for depth in range(len(levels) - 1, -1, -1):
        level = levels[depth]
        stage = f"level {len(levels) - depth}/{len(levels)}"
        reporter.check()
        targets = _dilate(level.hole, r)
        valid = _valid_sources(level.hole, r)
        if not valid.any():
            # The hole leaves no whole known patch at this scale: fall back to the smooth
            # fill, and let finer levels (which have more room) start afresh.
            level.image = _smooth_init(level.image, level.hole)
            nnf, weight = None, None
            for round_ in range(plan[depth]):
                step(stage, level if round_ == plan[depth] - 1 else None)
            continue
        fresh = nnf is None
        if nnf is None:
            nnf = _random_sources(targets, valid, rng)
            if depth < len(levels) - 1:
                level.image = _from_parent(level, levels[depth + 1])
        else:
            assert weight is not None
            parent = levels[depth + 1]
            nnf, weight = _upsample(nnf, weight, parent.hole.shape, targets, valid, rng)
            level.image = _vote(level.image, level.hole, nnf, weight, r, reporter)
        if fresh or _searchable(targets, settings):
            search = _Search(level, targets, valid, nnf, rng, settings)
            for round_ in range(plan[depth]):
                search.improve()
                level.image = _vote(level.image, level.hole, search.nnf, search.weight, r, reporter)
                search.refresh(level.image)
                step(stage, level if round_ == plan[depth] - 1 else None)
            nnf, weight = search.nnf, search.weight
        else:
            step(stage, level)
    return levels[0].image


def _rounds(depth: int, level: _Level, settings: Settings) -> int:
    if not _searchable(_dilate(level.hole, settings.patch_radius), settings):
        return 1
    return min(settings.em_iterations, settings.min_em_iterations + depth)


def _searchable(targets: BoolMap, settings: Settings) -> bool:
    return int(np.count_nonzero(targets)) <= settings.search_budget


# --- pyramid ------------------------------------------------------------------------


def _pyramid(image: FloatImage, hole: BoolMap, settings: Settings) -> list[_Level]:
    """Halve until the hole is about a patch thick, or the image too small to halve.

    Levels too large to search are always halved further, so that at least the
    coarsest level is searched whatever the hole's shape.
    """
    r = settings.patch_radius
    min_side = 4 * (2 * r + 1)
    levels = [_Level(image.copy(), hole.copy())]
    while True:
        level = levels[-1]
        h, w = level.hole.shape
        if min(h, w) < 2 * min_side:
            break
        thick = _thickness(level.hole) > settings.coarsest_thickness * r
        if not thick and _searchable(_dilate(level.hole, r), settings):
            break
        levels.append(_downsample(level))
    return levels


def _thickness(hole: BoolMap) -> float:
    """Largest distance from a hole pixel to the nearest known pixel."""
    known = np.where(hole, 255, 0).astype(np.uint8)
    distance = cv2.distanceTransform(known, cv2.DIST_L2, 3)
    return float(distance.max())


def _downsample(level: _Level) -> _Level:
    """2x2 box average; a coarse pixel is hole if any of its four is, so that known
    coarse pixels are averages of known pixels only."""
    h, w = level.hole.shape
    pad = ((0, h % 2), (0, w % 2))
    image = np.pad(level.image, (*pad, (0, 0)), mode="edge")
    hole = np.pad(level.hole, pad, mode="edge")
    h2, w2 = hole.shape[0] // 2, hole.shape[1] // 2
    coarse = image.reshape(h2, 2, w2, 2, 3).mean(axis=(1, 3), dtype=np.float32)
    coarse_hole = np.asarray(hole.reshape(h2, 2, w2, 2).any(axis=(1, 3)), dtype=bool)
    return _Level(np.ascontiguousarray(coarse, dtype=np.float32), coarse_hole)


def _from_parent(level: _Level, parent: _Level) -> FloatImage:
    """``level``'s image with its hole taken from the coarser ``parent``, enlarged."""
    h, w = level.hole.shape
    up = parent.image[(np.arange(h) // 2)[:, None], (np.arange(w) // 2)[None, :]]
    out = level.image.copy()
    out[level.hole] = up[level.hole]
    return out


def _smooth_init(image: FloatImage, hole: BoolMap) -> FloatImage:
    """cv2.inpaint (Telea) of the hole: a smooth first estimate for the coarsest level."""
    as_bytes = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    mask = np.where(hole, 255, 0).astype(np.uint8)
    filled = cv2.inpaint(as_bytes, mask, _TELEA_RADIUS, cv2.INPAINT_TELEA).astype(np.float32)
    out = image.copy()
    out[hole] = filled[hole]
    return out


def _upsample(
    nnf: Index,
    weight: FloatImage,
    coarse_shape: tuple[int, ...],
    targets: BoolMap,
    valid: BoolMap,
    rng: np.random.Generator,
) -> tuple[Index, FloatImage]:
    """Carry a coarse NNF to the next finer level: a target's source is its coarse
    parent's source, scaled, plus the same sub-pixel offset. Sources that land on an
    invalid spot (the hole shrinks and grows between scales) are drawn at random."""
    h, w = targets.shape
    ch, cw = coarse_shape[0], coarse_shape[1]
    ty, tx = np.nonzero(targets)
    parent = (ty // 2) * cw + (tx // 2)
    source = nnf.reshape(ch, cw).ravel()[parent]
    sy = 2 * (source // cw) + ty % 2
    sx = 2 * (source % cw) + tx % 2
    inside = (sy < h) & (sx < w)
    flat = np.where(inside, sy * w + sx, 0)
    ok = inside & valid.ravel()[flat]
    fresh = _random_sources(targets, valid, rng).ravel()[ty * w + tx]
    out = np.full(h * w, -1, np.intp)
    out[ty * w + tx] = np.where(ok, flat, fresh)
    up = weight[(np.arange(h) // 2)[:, None], (np.arange(w) // 2)[None, :]]
    return out, np.ascontiguousarray(up, dtype=np.float32)


# --- sources, targets and the NNF ---------------------------------------------------


def _dilate(hole: BoolMap, r: int) -> BoolMap:
    kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    grown = cv2.dilate(hole.astype(np.uint8), kernel)
    return np.asarray(grown, dtype=bool)


def _valid_sources(hole: BoolMap, r: int) -> BoolMap:
    """Centres of patches that lie wholly inside the image and wholly outside the hole."""
    valid = ~_dilate(hole, r)
    h, w = hole.shape
    valid[:r] = False
    valid[h - r :] = False
    valid[:, :r] = False
    valid[:, w - r :] = False
    return valid


def _random_sources(targets: BoolMap, valid: BoolMap, rng: np.random.Generator) -> Index:
    """An NNF over the whole level (-1 off the targets), each target a random source."""
    pool = np.flatnonzero(valid)
    nnf = np.full(targets.size, -1, np.intp)
    where = np.flatnonzero(targets)
    nnf[where] = pool[rng.integers(0, pool.size, where.size)]
    return nnf


class _Search:
    """PatchMatch on one level: the targets' matches and distances, improved in place."""

    def __init__(
        self,
        level: _Level,
        targets: BoolMap,
        valid: BoolMap,
        nnf: Index,
        rng: np.random.Generator,
        settings: Settings,
    ) -> None:
        self._rng = rng
        self._settings = settings
        self._r = settings.patch_radius
        self._shape = targets.shape
        h, w = targets.shape
        self._targets = np.flatnonzero(targets)
        self._is_target = targets.ravel()
        self._valid = valid.ravel()
        self._filters = _pca_filters(level.image, valid, self._r, settings.features, rng)
        # Sources are wholly known, so their features never change on this level; a
        # full map makes a candidate's features a single row gather.
        self._features = _feature_map(level.image, self._filters).reshape(h * w, -1)
        rows, cols = np.nonzero(targets)
        r = self._r
        self._box = (
            slice(max(int(rows.min()) - r, 0), min(int(rows.max()) + r + 1, h)),
            slice(max(int(cols.min()) - r, 0), min(int(cols.max()) + r + 1, w)),
        )
        box_w = self._box[1].stop - self._box[1].start
        self._in_box = (rows - self._box[0].start) * box_w + cols - self._box[1].start
        self.nnf = nnf
        self.weight = np.zeros(self._shape, np.float32)
        self.refresh(level.image)

    def refresh(self, image: FloatImage) -> None:
        """Recompute the targets' features from the current estimate and their
        distances to their current sources."""
        # Only the targets' surroundings changed; filtering that box alone is exact
        # because a target patch never reaches outside it (the border is reflected
        # the same way as for the full map when the box touches it).
        box = _feature_map(np.ascontiguousarray(image[self._box]), self._filters)
        self._target_features = box.reshape(-1, box.shape[2])[self._in_box]
        self._distance = self._cost(self.nnf[self._targets])
        self._update_weight()

    def improve(self) -> None:
        """Propagation and random search, ``search_iterations`` times."""
        h, w = self._shape
        jumps = [j for j in (8, 4, 2, 1) if j < max(h, w)]
        for _ in range(self._settings.search_iterations):
            for jump in jumps:
                for step in (jump, -jump, jump * w, -jump * w):
                    self._propagate(step)
            radius = float(max(h, w))
            while radius >= 1.0:
                self._random_search(radius)
                radius /= 2.0
        self._update_weight()

    def _propagate(self, step: int) -> None:
        """Each target tries the match of the target ``step`` (flat) away, shifted back."""
        neighbour = self._targets + step
        inside = (neighbour >= 0) & (neighbour < self.nnf.size)
        neighbour = np.where(inside, neighbour, self._targets)
        candidate = self.nnf[neighbour] - step
        usable = inside & self._is_target[neighbour]
        self._try(candidate, usable)

    def _random_search(self, radius: float) -> None:
        h, w = self._shape
        current = self.nnf[self._targets]
        span = max(1, int(radius))
        dy = self._rng.integers(-span, span + 1, current.size)
        dx = self._rng.integers(-span, span + 1, current.size)
        sy = np.clip(current // w + dy, 0, h - 1)
        sx = np.clip(current % w + dx, 0, w - 1)
        self._try(sy * w + sx, np.ones(current.size, bool))

    def _try(self, candidate: Index, usable: NDArray[np.bool_]) -> None:
        # A shifted flat index can wrap to the previous row: harmless, since it is
        # only a proposal and is scored by its true distance like any other.
        usable &= (candidate >= 0) & (candidate < self.nnf.size)
        candidate = np.where(usable, candidate, 0)
        usable &= self._valid[candidate]
        cost = self._cost(candidate)
        better = usable & (cost < self._distance)
        self._distance[better] = cost[better]
        self.nnf[self._targets[better]] = candidate[better]

    def _cost(self, sources: Index) -> NDArray[np.float32]:
        diff = self._features[sources] - self._target_features
        return np.asarray(np.einsum("ij,ij->i", diff, diff), dtype=np.float32)

    def _update_weight(self) -> None:
        # Wexler et al.'s similarity exp(-d / 2 sigma^2), kept as its logarithm so the
        # vote can normalise per pixel; sigma^2 from a percentile of the distances, so
        # poorly matched patches barely count.
        scale = float(np.percentile(self._distance, self._settings.vote_percentile)) + 1e-3
        flat = self.weight.ravel()
        flat[self._targets] = -self._distance / (2.0 * scale)


def _pca_filters(
    image: FloatImage, valid: BoolMap, r: int, count: int, rng: np.random.Generator
) -> list[FloatImage]:
    """The ``count`` principal (2r+1)² patterns of known single-channel patches.

    Learnt per channel rather than over colour patches jointly, so that each feature
    is one cv2.filter2D over a three-channel image: far cheaper than gathering every
    patch, and for natural images nearly as faithful.
    """
    pool = np.flatnonzero(valid)
    sample = pool[rng.integers(0, pool.size, min(_PCA_SAMPLES, pool.size))]
    w = valid.shape[1]
    side = 2 * r + 1
    span = np.arange(-r, r + 1)
    ys = (sample // w)[:, None, None] + span[None, :, None]
    xs = (sample % w)[:, None, None] + span[None, None, :]
    patches = image[ys, xs].transpose(0, 3, 1, 2).reshape(-1, side * side)
    patches -= patches.mean(axis=0)
    centred = patches.astype(np.float64)
    covariance = centred.T @ centred
    _, vectors = np.linalg.eigh(covariance)
    top = vectors[:, ::-1][:, : min(count, side * side)]
    return [np.ascontiguousarray(v.reshape(side, side), dtype=np.float32) for v in top.T]


def _feature_map(image: FloatImage, filters: list[FloatImage]) -> FloatImage:
    """(h, w, 3 * len(filters)): every pixel's patch projected on each filter, per channel.

    Patches reaching over the border are reflected; only targets see that, since
    sources lie wholly inside.
    """
    maps = [
        cv2.filter2D(image, cv2.CV_32F, kernel, borderType=cv2.BORDER_REFLECT_101)
        for kernel in filters
    ]
    return np.ascontiguousarray(np.concatenate(maps, axis=2), dtype=np.float32)


# --- voting -------------------------------------------------------------------------


def _vote(
    image: FloatImage,
    hole: BoolMap,
    nnf: Index,
    score: FloatImage,
    r: int,
    reporter: ProgressReporter,
) -> FloatImage:
    """Each hole pixel becomes the mode of what the patches covering it propose for
    it (the pixel at the same offset in each patch's source), found by mean shift from
    their weighted mean.

    ``score`` is each target's log-weight. Weights are taken relative to the best
    patch covering the pixel, so a pixel whose patches all match poorly still gets a
    vote rather than weights that underflow to nothing.
    """
    h, w = hole.shape
    holes = np.flatnonzero(hole)
    flat_image = image.reshape(-1, 3)
    flat_score = score.ravel()
    span = np.arange(-r, r + 1)
    dy = np.repeat(span, span.size)[:, None]
    dx = np.tile(span, span.size)[:, None]
    out = image.copy()
    flat_out = out.reshape(-1, 3)
    for start in range(0, holes.size, _VOTE_CHUNK):
        reporter.check()
        chunk = holes[start : start + _VOTE_CHUNK]
        # (patch offset, pixel): the target whose patch covers the pixel at that offset.
        ty = chunk // w - dy
        tx = chunk % w - dx
        ok = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        target = np.where(ok, ty * w + tx, 0)
        source = nnf[target]
        ok &= source >= 0
        log_weight = np.where(ok, flat_score[target], -np.inf)
        weight = np.exp(log_weight - log_weight.max(axis=0)).astype(np.float32)
        pixels = flat_image[np.where(ok, source + dy * w + dx, 0)]
        flat_out[chunk] = _mode(weight, pixels)
    return out


def _mode(weight: NDArray[np.float32], pixels: FloatImage) -> FloatImage:
    """Mean shift over ``pixels`` (offsets, n, 3) with prior weights (offsets, n),
    starting from their weighted mean; the kernel's width follows their spread."""
    total = weight.sum(axis=0)
    centre = np.einsum("kn,knc->nc", weight, pixels) / total[:, None]
    offset = pixels - centre
    variance = np.einsum("kn,knc,knc->n", weight, offset, offset) / total
    bandwidth = 2.0 * _MODE_BANDWIDTH * variance + 1.0
    for _ in range(_MODE_STEPS):
        offset = pixels - centre
        kernel = weight * np.exp(-np.einsum("knc,knc->kn", offset, offset) / bandwidth)
        total = np.maximum(kernel.sum(axis=0), np.float32(1e-30))
        centre = np.einsum("kn,knc->nc", kernel, pixels) / total[:, None]
    return np.asarray(centre, dtype=np.float32)


def crop_margin(hole_height: int, hole_width: int, patch_radius: int) -> int:
    """Context kept around the hole's bounding box: as much as the hole is large, so
    there are exemplars to copy from, and at least enough for a few patches."""
    return max(8 * (2 * patch_radius + 1), math.ceil(max(hole_height, hole_width)))
