"""A tiny FER2013-style folder layout for `make gpu-rehearsal`: a few images per class and split, in a temp folder.

    python gpu/tiny_data.py DEST [--per-class-train 15] [--per-class-test 5]

Copies the first images of each class from FER2013 ($FER2013_DIR, else ../shared/fer2013 beside the checkout) into
DEST/train/<class>/ and DEST/test/<class>/ (DEST must be outside the repository: FER2013 never enters it), or, when
FER2013 is absent, writes synthetic faces (fer_lib.core.synthetic) there as PNG files.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--per-class-train", type=int, default=15)
    parser.add_argument("--per-class-test", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(PROJECT))
    from fer_lib.core.labels import EMOTIONS

    if args.dest.resolve().is_relative_to(PROJECT):
        print(f"tiny_data: error: {args.dest} is inside the repository; FER2013 must stay outside it", file=sys.stderr)
        return 2
    source = Path(os.environ.get("FER2013_DIR", PROJECT.parent / "shared" / "fer2013"))
    counts = {"train": args.per_class_train, "test": args.per_class_test}
    if (source / "train").is_dir():
        for split, count in counts.items():
            for emotion in EMOTIONS:
                folder = args.dest / split / emotion
                folder.mkdir(parents=True, exist_ok=True)
                for file in sorted((source / split / emotion).iterdir())[:count]:
                    shutil.copy2(file, folder / file.name)
        print(f"tiny_data: {sum(counts.values()) * len(EMOTIONS)} FER2013 images from {source} in {args.dest}")
        return 0
    from PIL import Image

    from fer_lib.core.synthetic import make_synthetic_faces

    for offset, (split, count) in enumerate(counts.items()):
        images, labels = make_synthetic_faces(count * len(EMOTIONS), seed=offset, class_balance="balanced")
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = args.dest / split / EMOTIONS[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[:, :, 0]).save(folder / f"synthetic_{index:05d}.png")
    print(f"tiny_data: no FER2013 at {source}: wrote SYNTHETIC faces to {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
