"""Draw the demo's sample image (hivtp/data/sample.png): a few coloured shapes on a plain background."""

from pathlib import Path

from PIL import Image, ImageDraw


def main() -> None:
    image = Image.new("RGB", (224, 224), (236, 232, 220))
    draw = ImageDraw.Draw(image)
    draw.ellipse((24, 28, 78, 82), fill=(200, 40, 40))  # red circle, top left
    draw.rectangle((140, 36, 190, 86), fill=(40, 90, 200))  # blue square, top right
    draw.polygon([(60, 190), (110, 190), (85, 140)], fill=(40, 160, 60))  # green triangle, bottom
    out = Path(__file__).resolve().parents[1] / "hivtp" / "data" / "sample.png"
    image.save(out, optimize=True)
    print(out)


if __name__ == "__main__":
    main()
