"""Seeded SYNTHETIC cartoon faces in FER2013's format, drawn with numpy, so pipelines and tests run without FER2013.

Only the features (mouth, brows, eyes) carry the class; pose, lighting, texture, hair and noise are random nuisance,
and jitter makes neighbouring classes overlap, so a small CNN learns the task in a few epochs, but not trivially.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from fer_lib.core.labels import EMOTIONS, FER2013_TRAIN_COUNTS, IMAGE_SIZE, NUM_CLASSES

__all__ = ["EMOTIONS", "class_proportions", "make_synthetic_faces"]

_CHUNK = 256  # images rendered per vectorised batch: bounds peak memory without losing numpy's throughput

# Per-class mean of each feature parameter, in face-frame units (the face's half-width is 15 units, ~19 px at scale
# 1). Rows follow EMOTIONS order. Columns:
#   eye_h     half-height of the eye opening (wide: surprise/fear; narrow: angry/disgust)
#   brow_up   how far the brows are raised above their rest position
#   brow_tilt how far the INNER brow ends are pulled down (+) or up (-)
#   mouth_w   half-width of the mouth
#   curv      mouth corner lift: + smile, - frown
#   open      extra half-height at the mouth centre (how open it is)
#   asym      one-sided lift of the mouth (sign random per image)
#   wave      amplitude of a sinusoidal wiggle along the mouth
_PARAM_NAMES = ("eye_h", "brow_up", "brow_tilt", "mouth_w", "curv", "open", "asym", "wave")
_CLASS_MEANS = np.array([
    # eye_h brow_up tilt  mouth_w curv  open  asym  wave
    [0.95, -1.5, 3.4, 5.5, -2.2, 0.10, 0.0, 0.0],  # angry
    [1.10, -1.0, 1.8, 6.0, -1.0, 0.50, 1.8, 1.1],  # disgust
    [2.40, 2.0, -1.4, 6.5, -0.5, 1.80, 0.0, 0.0],  # fear
    [1.45, 0.3, 0.0, 8.5, 4.5, 1.50, 0.0, 0.0],  # happy
    [1.45, 0.5, -2.8, 6.3, -3.0, 0.10, 0.0, 0.0],  # sad
    [2.80, 3.2, 0.0, 4.0, 0.0, 4.00, 0.0, 0.0],  # surprise
    [1.85, 0.0, 0.0, 6.5, 0.0, 0.05, 0.0, 0.0],  # neutral
], dtype=np.float64)
# Pixels per face-frame unit at scale 1: FER2013 crops are tight, so the nominal face (semi-axes 15 x 18 units) is
# enlarged to fill most of the frame.
_FACE_SCALE = 1.25
# Per-image Gaussian jitter (std) of each parameter, shared by all classes: how much neighbouring classes overlap.
_PARAM_JITTER = np.array([0.22, 0.50, 0.45, 0.55, 0.40, 0.35, 0.25, 0.15])
# Lower bounds that keep jittered shapes drawable.
_PARAM_MIN = np.array([0.45, -3.0, -4.0, 3.0, -5.0, 0.0, -3.0, 0.0])


def class_proportions(class_balance: str | Sequence[float]) -> np.ndarray:
    """The 7 class probabilities for ``class_balance``: ``"balanced"``, ``"fer2013"`` (the real training set's
    imbalance, to exercise imbalance handling on synthetic data) or 7 non-negative weights, normalised."""
    expected = (f"class_balance must be 'balanced', 'fer2013' or a sequence of {NUM_CLASSES} non-negative weights; "
                f"got {class_balance!r}")
    if isinstance(class_balance, str):
        named = {"balanced": [1.0] * NUM_CLASSES, "fer2013": [FER2013_TRAIN_COUNTS[e] for e in EMOTIONS]}
        if class_balance.strip().lower() not in named:
            raise ValueError(expected)
        class_balance = named[class_balance.strip().lower()]  # normalised below like any weights
    try:
        weights = np.asarray(class_balance, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if weights.shape != (NUM_CLASSES,):
        raise ValueError(f"class_balance must have exactly {NUM_CLASSES} weights (one per class in {EMOTIONS}); "
                         f"got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError(f"class_balance weights must be finite and non-negative; got {weights.tolist()}")
    if weights.sum() <= 0:
        raise ValueError("class_balance weights must not all be zero")
    return weights / weights.sum()


def _allocate_counts(n: int, proportions: np.ndarray) -> np.ndarray:
    """Split ``n`` into class counts by largest remainder (each within one of ``n * p``; ties to the lower code)."""
    exact = n * proportions
    counts = np.floor(exact).astype(np.int64)
    short = n - int(counts.sum())
    if short > 0:
        remainders = np.where(proportions > 0, exact - counts, -1.0)  # never fill empty classes
        order = np.argsort(-remainders, kind="stable")
        counts[order[:short]] += 1
    return counts


def _check_int(value: object, name: str, minimum: int) -> int:
    """Validate an integer argument (bools rejected) and return it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    return int(value)


def _ramp(dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (negative = inside), ~1 px edge."""
    return np.clip(0.5 - dist, 0.0, 1.0)


def _upsample_matrix(coarse: int, fine: int) -> np.ndarray:
    """Linear interpolation matrix (fine x coarse) that smooths texture noise: column j interpolates unit vector j."""
    pos = np.linspace(0.0, coarse - 1.0, fine)
    return np.stack([np.interp(pos, np.arange(coarse), unit) for unit in np.eye(coarse)], axis=1).astype(np.float32)


def _draw_nuisance(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Per-image random nuisance parameters (all independent of the class)."""
    face_level = rng.uniform(95.0, 210.0, n)
    # Background differs from the face by at least ~25 grey levels, either sign.
    bg_offset = rng.uniform(25.0, 100.0, n) * rng.choice([-1.0, 1.0], n)
    return {
        "cx": IMAGE_SIZE / 2 - 0.5 + rng.uniform(-3.0, 3.0, n),
        "cy": IMAGE_SIZE / 2 - 0.5 + rng.uniform(-3.0, 3.0, n),
        "scale": _FACE_SCALE * rng.uniform(0.85, 1.15, n),
        "angle": np.deg2rad(rng.uniform(-10.0, 10.0, n)),
        "aspect": rng.uniform(0.9, 1.1, n),  # face width / height variation
        "face": face_level,
        "bg": np.clip(face_level + bg_offset, 10.0, 230.0),
        "feature_dark": rng.uniform(0.15, 0.5, n),  # feature level as fraction of face
        "hair_line": rng.uniform(-19.0, -12.0, n),  # v above which the oval is hair
        "hair_dark": rng.uniform(0.0, 0.7, n) * (rng.random(n) < 0.7),
        "grad_dir": rng.uniform(0.0, 2 * np.pi, n),
        "grad_amp": rng.uniform(0.0, 0.35, n),
        "texture_amp": rng.uniform(3.0, 25.0, n),
        "contrast": rng.uniform(0.7, 1.25, n),
        "noise_std": rng.uniform(2.0, 10.0, n),
    }


def _draw_features(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """Per-image feature parameters: class mean + shared-width Gaussian jitter."""
    n = labels.shape[0]
    params = np.maximum(_CLASS_MEANS[labels] + rng.normal(size=(n, len(_PARAM_NAMES))) * _PARAM_JITTER, _PARAM_MIN)
    params[:, _PARAM_NAMES.index("asym")] *= rng.choice([-1.0, 1.0], n)  # disgust's sneer goes either way
    return params


def _render(feats: np.ndarray, nz: dict[str, np.ndarray], rng: np.random.Generator,
            upsample: np.ndarray) -> np.ndarray:
    """Render a batch of faces to uint8 ``(b, 48, 48)``: every shape is a soft mask of a signed distance in each
    face's rotated, scaled frame (u right, v down, origin at the face centre), broadcast over the whole batch."""
    f32 = np.float32

    def col(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=f32)[:, None, None]

    eye_h, brow_up, brow_tilt, mouth_w, curv, mopen, asym, wave = (col(feats[:, i]) for i in range(len(_PARAM_NAMES)))
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(f32)
    dx, dy = xx[None] - col(nz["cx"]), yy[None] - col(nz["cy"])
    cos, sin = col(np.cos(nz["angle"])), col(np.sin(nz["angle"]))
    s = col(nz["scale"])
    inv_s = 1.0 / s
    u, v = (cos * dx + sin * dy) * inv_s, (-sin * dx + cos * dy) * inv_s
    au = np.abs(u)  # eyes and brows are mirror-symmetric

    # Face oval (semi-axes 15 x 18 face units, aspect jittered) and its hair cap.
    a_face = 15.0 * col(nz["aspect"])
    ell = np.sqrt((u / a_face) ** 2 + (v / 18.0) ** 2)
    face = _ramp((ell - 1.0) * 15.0 * s)
    hair = face * _ramp((v - col(nz["hair_line"])) * s) * col(nz["hair_dark"])

    # Eyes: ellipses centred at (+-6, -3.5), half-width 2.8.
    eu, ev = (au - 6.0) / 2.8, (v + 3.5) / eye_h
    eyes = _ramp((np.sqrt(eu * eu + ev * ev) - 1.0) * np.minimum(eye_h, 2.8) * s)

    # Brows: thick segments from inner (2.5, y0 + tilt) to outer (9.5, y0 - 0.4 tilt).
    y0 = -9.0 - brow_up
    px, py = au - 2.5, v - (y0 + brow_tilt)
    sx, sy = 7.0, -1.4 * brow_tilt
    t = np.clip((px * sx + py * sy) / (sx * sx + sy * sy), 0.0, 1.0)
    brows = _ramp((np.sqrt((px - t * sx) ** 2 + (py - t * sy) ** 2) - 1.3) * s)

    # Mouth: band around the centre line v = 9 + curv*(1/2 - t^2) + asym*t + wave*sin(2 pi t) (t = u / mouth_w, so
    # curv > 0 lifts the corners), thickened towards the middle by `open` (a round "O" when narrow and open).
    tm = u / mouth_w
    inside = np.clip(1.0 - tm * tm, 0.0, None)
    centre = 9.0 + curv * (0.5 - tm * tm) + asym * tm + wave * np.sin(2 * np.pi * tm)
    half = 1.1 + mopen * np.sqrt(inside)
    mouth = _ramp(np.maximum(np.abs(v - centre) - half, (np.abs(tm) - 1.0) * mouth_w) * s)

    features = np.maximum(np.maximum(eyes, brows), mouth)

    # Compose: background texture, face, hair, features; then lighting, contrast and sensor noise.
    coarse = rng.standard_normal(size=(feats.shape[0], 7, 7), dtype=f32)
    texture = (upsample @ coarse @ upsample.T) * col(nz["texture_amp"])
    face_lvl = col(nz["face"])
    img = col(nz["bg"]) + texture
    img += face * (face_lvl - img)
    img *= 1.0 - hair
    img += features * face * (face_lvl * col(nz["feature_dark"]) - img)

    gx, gy = (xx - 23.5) / 23.5, (yy - 23.5) / 23.5
    grad = col(np.cos(nz["grad_dir"])) * gx + col(np.sin(nz["grad_dir"])) * gy
    img *= 1.0 + col(nz["grad_amp"]) * grad
    mean = img.mean(axis=(1, 2), keepdims=True)
    img = mean + col(nz["contrast"]) * (img - mean)
    img += rng.standard_normal(size=img.shape, dtype=f32) * col(nz["noise_std"])
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_synthetic_faces(n: int, *, seed: int = 0,
                         class_balance: str | Sequence[float] = "balanced") -> tuple[np.ndarray, np.ndarray]:
    """``n`` faces, uint8 ``(n, 48, 48, 1)``, and int64 labels, shuffled so a prefix is roughly stratified; they depend
    on ``seed`` and ``n`` (``n=100`` is no prefix of ``n=200``: draw splits with separate seeds, never slice)."""
    n = _check_int(n, "n", 1)
    seed = _check_int(seed, "seed", 0)
    counts = _allocate_counts(n, class_proportions(class_balance))

    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), counts)
    rng.shuffle(labels)
    feats = _draw_features(rng, labels)
    nuisance = _draw_nuisance(rng, n)

    upsample = _upsample_matrix(7, IMAGE_SIZE)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 1), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        sl = slice(start, start + _CHUNK)
        images[sl, :, :, 0] = _render(feats[sl], {k: val[sl] for k, val in nuisance.items()}, rng, upsample)
    return images, labels
