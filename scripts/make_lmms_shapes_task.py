"""Write the data of the `hivtp_shapes` lmms-eval task (hivtp/lmms/tasks/hivtp_shapes/shapes.parquet).

The first SHAPES_QUESTIONS held-out questions of the shapes task (`hivtp.shapes.held_out`, the same
list `hivtp fidelity` starts with), each with its scene as an inline PNG, so lmms-eval needs no hub.
Needs `datasets` (pip install -e ".[lmms]"); tests/test_lmms_eval.py checks the file against hivtp.shapes.
"""


from datasets import Dataset, Features, Image, Value

from hivtp.lmms import SHAPES_QUESTIONS, SHAPES_TASK, tasks_dir
from hivtp.shapes import held_out
from hivtp.timing import write_atomic

FEATURES = Features({"seed": Value("int64"), "kind": Value("string"), "question": Value("string"),
                     "answer": Value("string"), "image": Image()})


def main() -> None:
    samples = held_out(SHAPES_QUESTIONS)
    columns = {"seed": [s.seed for s in samples], "kind": [s.kind for s in samples], "question": [s.question for s in samples],
               "answer": [s.answer for s in samples], "image": [s.image() for s in samples]}
    out = tasks_dir() / SHAPES_TASK / "shapes.parquet"
    write_atomic(out, lambda tmp: Dataset.from_dict(columns, features=FEATURES).to_parquet(str(tmp)))
    print(f"{out}: {len(samples)} held-out questions ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
