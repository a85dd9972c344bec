"""Draw the demo's sample image (hivtp/data/sample.png): a held-out scene of the shapes task.

The first scene from a reserved held-out seed range that has at least three things and a circle to
ask about ("what color is the circle ?", the demo's default prompt), drawn at 2x (224 px, nearest
neighbour) so it is easy to look at; the processor resizes it back to the tower's 112 px.
"""

from pathlib import Path

from PIL import Image

from hivtp.shapes import HELD_OUT_SEED, sample

FIRST_SEED = HELD_OUT_SEED + 2 * 10**8  # apart from the held-out evaluation and training-probe ranges


def main() -> None:
    seed = FIRST_SEED
    while (s := sample(seed, "color")).question != "what color is the circle ?" or len(s.things) < 3:
        seed += 1
    out = Path(__file__).resolve().parents[1] / "hivtp" / "data" / "sample.png"
    s.image().resize((224, 224), Image.Resampling.NEAREST).save(out, optimize=True)
    print(f"{out}: seed {seed}, {s.question} -> {s.answer}")


if __name__ == "__main__":
    main()
