"""The released lmms-eval (0.7.3) itself: `python -m lmms_eval` on the shipped `hivtp_shapes` task and
both shipped tiny models, offline.

- stock `llava_hf` and `hivtp_llava` keeping every patch give the same answer to every question, in
  lmms-eval's chat classes (the default) and its simple ones (`--force_simple`);
- the stock model, HIVTP paper mode and a budget score what `hivtp fidelity` computes for the same
  questions (`hivtp.fidelity_shapes.shapes_rows`): the same model and selection, so the same numbers;
- a bad option fails the run with hivtp_llava's one-line ValueError.

Needs `pip install -e ".[lmms]"`: .ci/run runs this file in a second virtual environment (lmms-eval's
dependencies clash with the main one's), under transformers 4.57.3 only. Elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed (pip install -e '.[lmms]'; .ci/run has a venv for it)")

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from hivtp import HIVTPConfig  # noqa: E402
from hivtp.demo import shipped_model  # noqa: E402
from hivtp.fidelity_shapes import shapes_rows  # noqa: E402
from hivtp.lmms import MODEL_NAME, SHAPES_QUESTIONS, SHAPES_TASK, tasks_dir  # noqa: E402
from hivtp.loading import load_llava  # noqa: E402
from hivtp.shapes import KINDS, held_out  # noqa: E402

MODELS = ("llava", "llava_next")
BUDGET = 16  # of 64 patches per image (per crop for NeXT)
EVERY_PATCH = 64  # a budget that keeps every patch: nothing pruned
# run name -> (model, HIVTP options, --force_simple)
RUNS = {
    "stock": ("llava_hf", "", False),
    "stock-simple": ("llava_hf", "", True),
    "kept": (MODEL_NAME, f",budget={EVERY_PATCH}", False),
    "kept-simple": (MODEL_NAME, f",budget={EVERY_PATCH}", True),
    "paper": (MODEL_NAME, ",budget=none", False),
    "budget": (MODEL_NAME, f",budget={BUDGET}", False),
}


def lmms_eval(args: list[str], home: Path) -> subprocess.CompletedProcess:
    """`python -m lmms_eval ARGS` offline, every cache under `home`; one thread (the model is tiny)."""
    env = {**os.environ, "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = ["--include_path", str(tasks_dir()), "--tasks", SHAPES_TASK, "--device", "cpu", "--batch_size", "1",
              "--verbosity", "DEBUG"]  # DEBUG: lmms-eval 0.7.3 re-raises a failed run's error (exit 1) instead of exit 0
    return subprocess.run([sys.executable, "-m", "lmms_eval", *args, *common], env=env, cwd=home,
                          capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict[str, Any]]:
    """Every run of RUNS on both shipped models, in one lmms-eval process (a --config list):
    (model kind, run name) -> {"accuracy": results, "answers": [answer per doc]}."""
    home = tmp_path_factory.mktemp("lmms")
    config = [{"model": model, "force_simple": simple, "log_samples": True, "output_path": str(home / kind / run),
               "model_args": f"pretrained={shipped_model(kind)},device_map=cpu{options}"}
              for kind in MODELS for run, (model, options, simple) in RUNS.items()]
    (home / "runs.yaml").write_text(yaml.safe_dump(config))
    done = lmms_eval(["--config", str(home / "runs.yaml")], home)
    (home / "lmms_eval.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    out = {}
    for kind in MODELS:
        for run in RUNS:
            (results,) = (home / kind / run).glob("*/*_results.json")
            (samples,) = (home / kind / run).glob(f"*/*_samples_{SHAPES_TASK}.jsonl")
            docs = sorted((json.loads(line) for line in samples.read_text().splitlines()), key=lambda d: d["doc_id"])
            out[kind, run] = {"accuracy": json.loads(results.read_text())["results"][SHAPES_TASK],
                              "answers": [d["filtered_resps"] for d in docs]}
    return out


def test_registry_resolves_both_classes() -> None:
    from lmms_eval.models import get_model
    from lmms_eval.models.chat.llava_hf import LlavaHf as Chat
    from lmms_eval.models.simple.llava_hf import LlavaHf as Simple

    from hivtp.lmms.llava_hf import HivtpLlava, HivtpLlavaSimple

    assert get_model(MODEL_NAME) is HivtpLlava and issubclass(HivtpLlava, Chat) and not HivtpLlava.is_simple
    assert get_model(MODEL_NAME, force_simple=True) is HivtpLlavaSimple and issubclass(HivtpLlavaSimple, Simple)
    assert HivtpLlavaSimple.is_simple and not issubclass(HivtpLlavaSimple, Chat)


def test_shipped_task_data_is_hivtp_shapes_held_out() -> None:
    from datasets import load_dataset

    data = load_dataset("parquet", data_files=str(tasks_dir() / SHAPES_TASK / "shapes.parquet"), split="train")
    samples = held_out(SHAPES_QUESTIONS)
    assert len(data) == len(samples) == 50 and {s.kind for s in samples} == set(KINDS)
    for row, sample in zip(data, samples):
        assert (row["seed"], row["kind"], row["question"], row["answer"]) == (sample.seed, sample.kind, sample.question, sample.answer)
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), np.asarray(sample.image()))


@pytest.mark.parametrize("args, message", [
    ({"budget": 0}, "hivtp_llava: bad HIVTP model_args: budget must be a positive int"),
    ({"score_layers": "6/7/10"}, "score_layers .* go beyond the vision encoder's 10 layers"),
    ({"hivtp_budget": 8}, r"hivtp_llava: unknown model_args \['hivtp_budget'\]"),
    ({"batch_size": 2}, "hivtp_llava: batch_size must be 1"),
])
def test_bad_options_refused_when_the_model_is_built(args, message) -> None:
    from hivtp.lmms.llava_hf import HivtpLlava, HivtpLlavaSimple

    for cls in (HivtpLlava, HivtpLlavaSimple):
        with pytest.raises(ValueError, match=message):
            cls(pretrained=str(shipped_model("llava")), device="cpu", **args)


def test_defaults_load_on_the_cpu_and_prune(tmp_path) -> None:
    from hivtp.lmms.llava_hf import HivtpLlava
    from hivtp.lmms.pruning import EvalModel

    lmm = HivtpLlava(pretrained=str(shipped_model("llava_next")), budget=8)  # no device, no device_map
    assert isinstance(lmm.model, EvalModel) and lmm.model.hivtp_config == HIVTPConfig(budget=8)
    assert str(lmm.device) == "cpu" and lmm.model.device.type == "cpu"


@pytest.mark.parametrize("kind", MODELS)
def test_every_patch_kept_answers_like_stock_llava_hf(harness, kind) -> None:
    stock = harness[kind, "stock"]["answers"]
    assert len(stock) == SHAPES_QUESTIONS and all(stock)  # no empty answer: every generation ran
    for run in ("stock-simple", "kept", "kept-simple"):
        assert harness[kind, run]["answers"] == stock, run


@pytest.mark.parametrize("kind", MODELS)
def test_accuracies_are_hivtp_fidelitys(harness, kind) -> None:
    model, processor = load_llava(shipped_model(kind))
    rows = shapes_rows(model, processor, kind, held_out(SHAPES_QUESTIONS), HIVTPConfig(), (BUDGET,), seed=0,
                       positions=("renumbered",))  # the deployed layout, the one lmms-eval's runs use
    row = {(r["method"], r["budget"]): r for r in rows}
    expected = {"stock": row["full", None], "paper": row["hivtp-paper", None], "budget": row["hivtp-rel", BUDGET]}
    for run, row in expected.items():
        got = harness[kind, run]["accuracy"]
        assert got["exact_match,none"] == pytest.approx(row["accuracy"]), run
        assert {k: got[f"{k},none"] for k in KINDS} == pytest.approx(row["per_kind"]), run
    assert expected["budget"]["accuracy"] < 1.0  # pruning this hard changes answers: the check can tell


def test_a_bad_option_fails_the_run_with_one_clear_error(tmp_path) -> None:
    done = lmms_eval(["--model", MODEL_NAME, "--model_args", f"pretrained={shipped_model('llava')},budget=-4",
                      "--output_path", str(tmp_path / "out")], tmp_path)
    assert done.returncode != 0
    assert "ValueError: hivtp_llava: bad HIVTP model_args: budget must be a positive int or None, got -4" in done.stdout + done.stderr
    assert not list(tmp_path.glob("out/*/*_results.json"))


def shapes_doc(index: int) -> dict[str, Any]:
    sample = held_out(SHAPES_QUESTIONS)[index]
    return {"image": sample.image(), "question": sample.question, "answer": sample.answer, "kind": sample.kind}


def chat_messages(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image", "url": doc["image"]}, {"type": "text", "text": doc["question"]}]}]


def request(kind: str, arguments: tuple, doc_id: int = 0) -> Any:
    from lmms_eval.api.instance import Instance

    return Instance(kind, arguments, idx=0, metadata={"task": "t", "doc_id": doc_id, "repeats": 1})


def test_a_failing_generation_fails_the_run(monkeypatch) -> None:
    """llava_hf catches the error and scores '' for it; hivtp_llava raises once the batch is done."""
    from hivtp.lmms.llava_hf import HivtpLlava

    lmm = HivtpLlava(pretrained=str(shipped_model("llava")), device="cpu", budget=16)
    lmm.task_dict = {"t": {"test": [shapes_doc(0), shapes_doc(1)]}}
    requests = [request("generate_until", ("", chat_messages, {"max_new_tokens": 1}, i, "t", "test"), i) for i in (0, 1)]
    assert all(text.strip() for text in (r.text for r in lmm.generate_until(requests)))  # both generations ran

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ValueError("image tokens and image features do not match: tokens 0, features 64")

    monkeypatch.setattr(lmm._model, "prune", broken)
    with pytest.raises(RuntimeError, match=r"hivtp_llava: 2 of 2 generations failed .*ValueError: image tokens and image"):
        lmm.generate_until(requests)


def test_loglikelihood_with_every_patch_kept_is_llava_hfs() -> None:
    from lmms_eval.models.simple.llava_hf import LlavaHf

    from hivtp.lmms.llava_hf import HivtpLlavaSimple

    pretrained = str(shipped_model("llava_next"))
    stock = LlavaHf(pretrained=pretrained, device="cpu", device_map="cpu")
    kept = HivtpLlavaSimple(pretrained=pretrained, budget=EVERY_PATCH)
    pruned = HivtpLlavaSimple(pretrained=pretrained, budget=4)
    docs = [shapes_doc(i) for i in range(5)]
    results = {}
    for name, lmm in (("stock", stock), ("kept", kept), ("pruned", pruned)):
        lmm.task_dict = {"t": {"test": docs}}
        results[name] = lmm.loglikelihood([request("loglikelihood", (d["question"], d["answer"], lambda doc: [doc["image"]], i, "t", "test"), i)
                                           for i, d in enumerate(docs)])
    assert [flag for _, flag in results["kept"]] == [flag for _, flag in results["stock"]]
    assert [loss for loss, _ in results["kept"]] == pytest.approx([loss for loss, _ in results["stock"]], rel=1e-4)
    assert [loss for loss, _ in results["pruned"]] != pytest.approx([loss for loss, _ in results["stock"]], rel=1e-4)
