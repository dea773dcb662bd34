"""Draw the demo's product images (data/images/): no photos can be fetched here, so simple drawings stand in.

    python scripts/make_demo_images.py
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1] / "data" / "images"


def phone(draw: ImageDraw.ImageDraw, rng: random.Random, size: int) -> None:
    w, h = size * 0.38, size * 0.75
    x, y = (size - w) / 2 + rng.uniform(-15, 15), (size - h) / 2
    draw.rounded_rectangle((x, y, x + w, y + h), radius=18, fill=(30, 30, 35))
    draw.rectangle((x + 8, y + 22, x + w - 8, y + h - 26), fill=(60 + rng.randint(0, 60), 120, 200))
    draw.ellipse((x + w / 2 - 6, y + h - 20, x + w / 2 + 6, y + h - 8), fill=(90, 90, 90))


def laptop(draw: ImageDraw.ImageDraw, rng: random.Random, size: int) -> None:
    top = size * 0.2 + rng.uniform(-10, 10)
    draw.rectangle((size * 0.2, top, size * 0.8, size * 0.62), fill=(170, 170, 180))
    draw.rectangle((size * 0.24, top + 8, size * 0.76, size * 0.58), fill=(40, 60 + rng.randint(0, 80), 90))
    draw.polygon([(size * 0.12, size * 0.8), (size * 0.88, size * 0.8), (size * 0.8, size * 0.62),
                  (size * 0.2, size * 0.62)], fill=(140, 140, 150))


def earbuds(draw: ImageDraw.ImageDraw, rng: random.Random, size: int) -> None:
    colour = (240, 240, 240) if rng.random() < 0.5 else (25, 25, 25)
    for cx in (size * 0.35, size * 0.65):
        cy = size * 0.45 + rng.uniform(-10, 10)
        draw.ellipse((cx - 30, cy - 30, cx + 30, cy + 30), fill=colour, outline=(120, 120, 120), width=3)
        draw.rounded_rectangle((cx - 9, cy + 20, cx + 9, cy + 95), radius=8, fill=colour, outline=(120, 120, 120))


DRAW = {"phone": phone, "laptop": laptop, "earbuds": earbuds}


def picture(kind: str, seed: int, size: int = 256) -> Image.Image:
    rng = random.Random(seed)
    image = Image.new("RGB", (size, size), tuple(rng.randint(215, 250) for _ in range(3)))
    DRAW[kind](ImageDraw.Draw(image), rng, size)
    return image


def main() -> None:
    (ROOT / "products").mkdir(parents=True, exist_ok=True)
    (ROOT / "examples").mkdir(parents=True, exist_ok=True)
    for i, kind in enumerate(["phone", "laptop", "earbuds", "phone", "earbuds", "laptop"]):
        picture(kind, seed=100 + i).save(ROOT / "products" / f"product-{i + 1:02d}.png")
    for kind in DRAW:
        picture(kind, seed=7).save(ROOT / "examples" / f"{kind}.png")
    whole = (ROOT / "products" / "product-01.png").read_bytes()
    (ROOT / "products" / "product-07-truncated.png").write_bytes(whole[: len(whole) // 3])


if __name__ == "__main__":
    main()
