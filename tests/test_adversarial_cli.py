"""Hostile and careless command lines: each one gets exit code 2 and exactly one `hivtp: error:` line,
and no file outside the command's output changes (the working directory, the home directory, the
checkpoints and every input are snapshotted before and compared after).

`{name}` in an argument is a file from tests/adversarial_inputs.py; `{sandbox}` is the working directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import cli_exit_code

from hivtp.demo import shipped_model

LLAVA = str(shipped_model("llava"))
NEXT = str(shipped_model("llava_next"))


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and a home directory full of the user's own files."""
    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    (home / "notes.txt").write_text("my notes")
    (home / "photos" / "cat.txt").write_text("a cat")
    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "results" / "committed.json").write_text("{}")
    (work / "paper.tex").write_text("draft")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return tmp_path


def snapshot(*roots: Path) -> dict[str, tuple]:
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            info = path.lstat()
            state[str(path)] = (path.is_dir(), info.st_size, info.st_mtime_ns, info.st_mode)
    return state


def assert_refused(argv: list[str], message: str, world: dict[str, Path], sandbox: Path, capsys) -> None:
    names = {name: str(path) for name, path in world.items()}
    argv = [a.format(sandbox=sandbox, **names) for a in argv]
    roots = (sandbox, next(iter(world.values())).parent, Path(LLAVA), Path(NEXT))
    before = snapshot(*roots)
    code = cli_exit_code(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, err)
    assert len(lines) == 1 and lines[0].startswith("hivtp: error: "), (argv, err)
    assert message.lower() in lines[0].lower(), (argv, lines[0])
    assert snapshot(*roots) == before, f"{argv} changed files outside its output"


# (argv, a piece of the one error line)
ARGUMENT_ERRORS = [
    # the HIVTP options, on every command that takes them
    *[(["generate", opt] + ([] if value is None else [value]), msg) for opt, value, msg in [
        ("--budget", "0", "positive integer"), ("--budget", "-3", "positive integer"), ("--budget", "ten", "positive integer"),
        ("--budget", "1.5", "positive integer"), ("--budget", "", "positive integer"), ("--budget", "1e3", "positive integer"),
        ("--score-layers", "", "comma-separated layer indices"), ("--score-layers", "a,b", "comma-separated layer indices"),
        ("--score-layers", "6,,7", "comma-separated layer indices"), ("--score-layers", "-1", "layer indices >= 0"),
        ("--score-layers", "1,1", "must not repeat"), ("--score-layers", "6.5", "comma-separated layer indices"),
        ("--score-layers", "Relative", "comma-separated layer indices"), ("--score-layers", "paper", "comma-separated layer indices"),
        ("--regions", "2", "two positive ints"), ("--regions", "0,2", "two positive ints"), ("--regions", "2,2,2", "two positive ints"),
        ("--regions=-1,2", None, "two positive ints"), ("--regions", "-1,2", "expected one argument"), ("--regions", "x,y", "comma-separated integers"),
        ("--global-ratio", "1.5", "[0, 1]"), ("--global-ratio", "-0.1", "[0, 1]"), ("--global-ratio", "nan", "[0, 1]"),
        ("--global-ratio", "inf", "[0, 1]"), ("--global-ratio", "half", "[0, 1]"),
        ("--window", "0", "positive integer"), ("--window", "-2", "positive integer"), ("--window", "two", "positive integer"),
        ("--max-new-tokens", "0", "positive integer"), ("--max-new-tokens", "many", "positive integer"),
        ("--ttft-repeats", "-1", "integer >= 0"), ("--dtype", "float8", "invalid choice"), ("--dtype", "fp16", "invalid choice"),
    ]],
    *[([command, "--budget", "0"], "positive integer") for command in ("build", "bench", "viz", "fidelity")],
    *[([command, "--global-ratio", "2"], "[0, 1]") for command in ("build", "bench", "viz", "fidelity")],
    *[([command, "--regions", "2"], "two positive ints") for command in ("bench", "viz", "fidelity")],
    # empty paths (an unset shell variable) never mean "here" or "the default"
    *[(argv, "empty string") for argv in [
        ["generate", "--image", ""], ["generate", "--model", ""], ["generate", "--engine", ""], ["generate", "--image", " "],
        ["generate", "--plugin-lib", ""], ["viz", "--image", ""], ["viz", "--model", ""], ["viz", "--out", ""],
        ["fidelity", "--model", ""], ["fidelity", "--images", ""], ["fidelity", "--out", ""], ["bench", "--model", ""],
        ["bench", "--out-dir", ""], ["bench", "--image", ""], ["bench", "--engine", ""],
        ["build", "--model", LLAVA, "--output", ""], ["build", "--model", "", "--output", "o"],
        ["build", "--model", LLAVA, "--output", "o", "--plugin-lib", ""],
    ]],
    # subcommands and flags that do not exist
    (["frobnicate"], "invalid choice"), ([], "required"), (["generate", "--budgte", "3"], "unrecognized"),
    (["bench", "--stage", "everything"], "invalid choice"), (["bench", "--backend", "onnx"], "invalid choice"),
    (["bench", "--random-init", "gpt-4"], "invalid choice"), (["build", "--dtype", "fp32", "--model", "m", "--output", "o"], "invalid choice"),
    (["build", "--model", LLAVA], "required"), (["build", "--output", "o"], "required"),
    # a newline, a terminal escape or a line separator in what the user typed stays inside the one line
    (["generate", "--image", "no\nsuch.png"], "image not found: no\\nsuch.png"), (["viz", "--model", "a\r\nb"], "a\\r\\nb"),
    (["generate", "--image", "\x1b[2J.png"], "\\x1b[2J"), (["fidelity", "--images", "x\u2028y"], "x\\u2028y"),
    (["generate", "--budg\net", "3"], "unrecognized"), (["generate", "--device", "cpu\n"], "unknown device"),
    (["build", "--model", LLAVA, "--output", "\udcff\udcfe", "--onnx-only"], "UTF-8 path"),  # not UTF-8: ONNX's checker dies on it
    (["viz", "--image", "x\udcff.png"], "UTF-8 path"),
    # numbers past what the run, or the platform's timers, can take
    (["generate", "--ttft-repeats", "1001"], "at most 1000"), (["generate", "--ttft-repeats", "9" * 30], "at most 1000"),
    (["fidelity", "--seed", "9" * 30], "seed"), (["fidelity", "--seed", "1.5"], "seed"),
    (["ask", "--timeout", "99999999999"], "seconds"), (["serve", "--start-timeout", "10" * 10], "seconds"),
    (["bench", "--stage", "serve", "--time-limit", "1e9"], "seconds"), (["generate", "--budget", "9" * 5000], "positive integer"),
    (["generate", "--model", LLAVA, "--engine", "e"], "not allowed with"),
    (["bench", "--model", LLAVA, "--random-init", "tiny"], "not allowed with"),
]

REFUSED_OPTIONS = [  # options that would be silently ignored, or sizes no machine can run
    (["generate", "--plugin-lib", "x.so"], "no effect without --engine"),
    (["generate", "--engine", "e", "--budget", "4"], "no effect with --engine"),
    (["generate", "--engine", "e", "--device", "cpu"], "no effect with --engine"),
    (["generate", "--engine", "e", "--score-layers", "1,2"], "no effect with --engine"),
    (["generate", "--max-new-tokens", "5000"], "exceeds the model's context"),
    (["generate", "--prompt", "word " * 2000], "exceeds the model's context"),
    (["generate", "--model", "{chat_template_garbage}"], "chat template does not place one <image> marker"),
    *[([command, *extra, "--prompt", text], message) for text, message in [
        ("", "the prompt is empty"), (" \t\n", "the prompt is empty"), ("<image> and <image>", "2 <image> markers"),
        ("\udcff what", "not UTF-8"),  # a byte that is not UTF-8, as Python hands it over from argv
      ] for command, extra in [("generate", []), ("ask", []), ("bench", ["--random-init", "tiny"]), ("fidelity", ["--images", "{not_a_build}"])]],
    (["fidelity", "--budget", "4", "--budgets", "8"], "not both"),
    (["fidelity", "--prompt", "what ?"], "no effect in shapes mode"),
    (["fidelity", "--max-new-tokens", "3"], "no effect in shapes mode"),
    (["fidelity", "--images", "{not_a_build}", "--questions", "5"], "no effect with --images"),
    (["fidelity", "--questions", "1000000"], "at most"),
    (["fidelity", "--questions", "0"], "positive integer"),
    (["fidelity", "--budgets", "0,4"], "positive integer"), (["fidelity", "--budgets", "4,,8"], "positive integer"),
    (["fidelity", "--budgets", ""], "positive integer"),
    (["fidelity", "--images", "{not_a_build}"], "no images"),
    (["fidelity", "--images", "{a_file}"], "image folder not found"),
    (["fidelity", "--images", "{not_a_build}", "--out", "{not_a_build}/r.json"], "inside the --images folder"),
    (["fidelity", "--model", "{config_only}", "--out", "{config_only}/config.json"], "inside the checkpoint"),
    (["viz", "--model", "{config_only}", "--out", "{config_only}/v.png"], "inside the checkpoint"),
    (["viz", "--image", "{truncated_png}", "--out", "{truncated_png}"], "is the input image"),
    (["fidelity", "--images", "/no/such/folder"], "image folder not found"),
    (["bench"], "pass --model DIR"),
    (["bench", "--random-init", "tiny", "--batch", "1000000000"], "GiB"),
    (["bench", "--random-init", "tiny", "--stage", "score", "--batch", "1000000000"], "GiB"),
    (["bench", "--random-init", "llava-1.5-7b", "--stage", "vision", "--device", "cpu", "--batch", "1000000000"], "GiB"),
    (["bench", "--random-init", "tiny", "--stage", "vision", "--new-tokens", "3"], "no effect in the vision stage"),
    (["bench", "--random-init", "tiny", "--stage", "vision", "--budgets", "3,4"], "no effect in the vision stage"),
    (["bench", "--random-init", "tiny", "--stage", "vision", "--score-layers", "99"], "go beyond"),
    (["bench", "--random-init", "tiny", "--stage", "select", "--compile"], "--compile applies"),
    (["bench", "--backend", "trtllm", "--engine", "e", "--compile"], "--compile applies"),
    (["bench", "--stage", "serve", "--compile"], "no effect in the serve stage"),
    (["bench", "--stage", "serve", "--repeats", "3"], "no effect in the serve stage"),
    (["bench", "--random-init", "tiny", "--batch", "0"], "positive integer"),
    (["bench", "--random-init", "tiny", "--batch", "1,0"], "positive integer"),
    (["bench", "--random-init", "tiny", "--batch", "a"], "positive integer"),
    (["bench", "--random-init", "tiny", "--repeats", "0"], "positive integer"),
    (["bench", "--random-init", "tiny", "--repeats", "100000"], "at most"),
    (["bench", "--random-init", "tiny", "--warmup", "-1"], "integer >= 0"),
    (["bench", "--random-init", "tiny", "--warmup", "5000"], "at most"),
    (["bench", "--random-init", "tiny", "--threads", "0"], "positive integer"),
    (["bench", "--random-init", "tiny", "--threads", "100000"], "more threads only add noise"),
    (["bench", "--random-init", "tiny", "--score-layers", "99"], "go beyond"),
    (["bench", "--random-init", "tiny", "--stage", "select", "--score-layers", "99"], "go beyond"),
    (["bench", "--random-init", "tiny", "--new-tokens", "100000"], "does not fit"),
    (["bench", "--random-init", "tiny", "--stage", "select", "--new-tokens", "3"], "no effect in the select stage"),
    (["bench", "--random-init", "tiny", "--stage", "score", "--budgets", "3"], "no effect in the score stage"),
    (["bench", "--random-init", "tiny", "--stage", "score", "--image", "x.png"], "no effect in the score stage"),
    (["bench", "--random-init", "tiny", "--stage", "select", "--ops", "triton"], "no effect in the select stage"),
    (["bench", "--random-init", "tiny", "--ops", "triton"], "--ops triton runs the Triton kernels on CUDA"),
    (["bench", "--random-init", "tiny", "--engine", "e"], "no effect with --backend torch"),
    (["bench", "--random-init", "tiny", "--budget", "4", "--budgets", "8"], "not both"),
    (["bench", "--backend", "trtllm"], "needs --engine"),
    (["bench", "--backend", "trtllm", "--engine", "e", "--stage", "select"], "e2e stage only"),
    (["bench", "--backend", "trtllm", "--engine", "e", "--random-init", "tiny"], "no effect with --backend trtllm"),
    (["bench", "--backend", "trtllm", "--engine", "e", "--budget", "4"], "no effect with --backend trtllm"),
    (["bench", "--backend", "trtllm", "--engine", "e", "--ops", "reference"], "no effect with --backend trtllm"),
    (["bench", "--random-init", "llava-1.5-7b", "--device", "cpu"], "needs a GPU"),
    (["build", "--model", LLAVA, "--output", "o", "--max-batch", "0"], "positive integer"),
    (["build", "--model", LLAVA, "--output", "o", "--max-batch", "1000000"], "at most"),
    (["build", "--model", LLAVA, "--output", "o", "--max-text-len", "0"], "positive integer"),
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--plugin-lib", "x.so"], "no effect with --onnx-only"),
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--tp-size", "2"], "no effect with --onnx-only"),
    (["build", "--model", LLAVA, "--output", "o", "--tp-size", "3"], "does not divide"),
    (["build", "--model", LLAVA, "--output", "o", "--select-impl", "onnx", "--plugin-lib", "x.so"], "builds without"),
    (["build", "--model", LLAVA, "--output", "o", "--max-text-len", "5000"], "max_position_embeddings"),
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--score-layers", "3,40"], "go beyond"),
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--budget", "9" * 20], "int32 plugin field"),  # a traceback
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--budget", "3000000000"], "int32 plugin field"),  # wrapped
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--window", "9" * 20], "int32 plugin field"),
    (["build", "--model", LLAVA, "--output", "o", "--onnx-only", "--regions", "3,3000000000"], "int32 plugin field"),
]

SERVE_ERRORS = [  # hivtp serve / ask / bench --stage serve, refused before any server starts or is contacted
    (["serve", "--repository-only", ""], "empty string"), (["serve", "--repository-only", ".", "--force"], "current directory"),
    (["serve", "--repository-only", "~", "--force"], "home directory"), (["serve", "--repository-only", "/", "--force"], "filesystem root"),
    (["serve", "--repository-only", "{not_a_build}", "--force"], "only replaces an earlier hivtp model repository"),
    (["serve", "--repository-only", "{not_a_build}"], "pass --force"), (["serve", "--repository-only", "{a_file}", "--force"], "is a file"),
    (["serve", "--repository-only", LLAVA, "--force"], "would replace the checkpoint"),
    (["serve", "--repository-only", "{a_file}/repo"], "not a folder"), (["serve", "--repository-only", "/proc/repo"], "cannot write"),
    (["serve", "--repository-only", "r", "--model", "{patch_size_0}"], "patch_size"),
    (["serve", "--repository-only", "r", "--model", "{config_bert}"], "holds a 'bert' model"),
    (["serve", "--repository-only", "r", "--model", "{tokenizer_garbage}"], "cannot load the processor"),  # the server's load
    (["serve", "--repository-only", "r", "--model", "{processor_config_missing}"], "patch_size"),
    (["serve", "--repository-only", "r", "--plugin-lib", "x.so"], "without --engine"),
    (["serve", "--repository-only", "r", "--host", "0.0.0.0"], "no server is started"),
    (["serve", "--repository-only", "r", "--grpc-port", "9000"], "no server is started"),
    (["serve", "--force"], "without --repository-only"), (["serve", "--http-port", "0"], "positive integer"),
    (["serve", "--http-port", "70000"], "port"), (["serve", "--grpc-port", "http"], "positive integer"),
    (["serve", "--instances", "0"], "positive integer"), (["serve", "--gpus", "a"], "integer"), (["serve", "--budget", "0"], "positive integer"),
    (["serve", "--max-tokens-limit", "-1"], "positive integer"), (["serve", "--queue-delay-us", "-5"], "integer >= 0"),
    (["ask", "--url", ""], "HOST:PORT"), (["ask", "--url", "::"], "HOST:PORT"), (["ask", "--url", "http://x:80"], "HOST:PORT"),
    (["ask", "--url", "127.0.0.1:99999"], "HOST:PORT"), (["ask", "--image", ""], "empty string"),
    (["ask", "--budget", "3", "--pruning-mode", "none"], "no effect"), (["ask", "--pruning-mode", "budget"], "needs --budget"),
    (["ask", "--pruning-mode", "half"], "invalid choice"), (["ask", "--max-new-tokens", "0"], "positive integer"),
    (["ask", "--url", "127.0.0.1:1", "--image", "{bomb_png}"], "too large"),
    (["bench", "--stage", "serve", "--random-init", "tiny"], "serves a checkpoint"),
    (["bench", "--stage", "serve", "--batch", "2"], "no effect in the serve stage"),
    (["bench", "--stage", "serve", "--budget", "4"], "pass --budgets"),
    (["bench", "--random-init", "tiny", "--concurrency", "4"], "option of --stage serve"),
    (["bench", "--random-init", "tiny", "--instances", "2"], "option of --stage serve"),
    # sizes Triton would refuse at load time, or that no machine runs: refused before the repository is written
    (["serve", "--repository-only", "r", "--instances", "100000000"], "instances must be an integer in 1..64"),
    (["serve", "--repository-only", "r", "--max-batch", "100000000000"], "max-batch must be an integer in 1..1024"),
    (["serve", "--repository-only", "r", "--queue-delay-us", "9" * 24], "queue-delay-us must be an integer in 0.."),
    (["serve", "--repository-only", "r", "--max-tokens-limit", "9" * 20], "max-tokens-limit must be an integer"),
    (["serve", "--repository-only", "r", "--max-tokens-limit", "8"], "below the default answer length"),
    (["serve", "--repository-only", "r", "--gpus", "0,0"], "distinct GPU ids"),
    (["serve", "--repository-only", "r", "--budget", "9" * 20], "INT32 pruning tensor"),  # every default request failed
    (["serve", "--repository-only", "r", "--gpus", "9" * 20], "distinct GPU ids"),
    (["bench", "--stage", "serve", "--instances", "1000"], "instances must be an integer in 1..64"),
    (["bench", "--stage", "serve", "--concurrency", "4,1000000"], "at most 1024 clients"),
    (["serve", "--host", ""], "is empty"), (["serve", "--host", " "], "is empty"),  # '' would listen on every interface
    (["serve", "--host", "999.1.1.1"], "not an IPv4 address"), (["serve", "--host", "a b"], "not an IPv4 address"),
    (["serve", "--host", "\udcff"], "not an IPv4 address"),
    (["ask", "--url", "127.0.0.1:1", "--budget", "99999999999", "--pruning-mode", "budget"], "INT32"),
    (["ask", "--url", "127.0.0.1:1", "--max-new-tokens", "99999999999"], "INT32"),
]

DEVICES = [
    ("meta", "cannot run hivtp"), ("xpu", "cannot run hivtp"), ("tpu", "unknown device"), ("CUDA", "unknown device"),
    ("cuda:abc", "unknown device"), ("-1", "unknown device"), ("cpu,cuda", "unknown device"), ("", "unknown device"),
    ("mps", "not available"), ("cuda", "not available"), ("cuda:7", ""), ("hpu", "cannot run hivtp"), ("vulkan", "cannot run hivtp"),
]
DEVICE_ERRORS = [([command, "--device", device, *extra], message)
                 for device, message in DEVICES
                 for command, extra in [("generate", []), ("viz", []), ("fidelity", []),
                                        ("bench", ["--random-init", "tiny"])]]

BAD_IMAGES = [  # (world name, message)
    ("empty_file", "cannot read image"), ("text_file", "cannot read image"), ("png_magic_only", "cannot read image"),
    ("bomb_png", "too large"), ("wide_bomb_png", "too large"), ("zero_width_png", "cannot read image"),
    ("html_as_png", "cannot read image"), ("truncated_png", "cannot read image"), ("truncated_jpeg", "cannot read image"),
    ("folder_named_png", "is a folder"), ("not_a_build", "is a folder"), ("fifo_png", "not a regular file"),
    ("loop_png", "points back to itself"),
]
IMAGE_ERRORS = [([command, "--image", "{" + name + "}", *extra], message)
                for name, message in BAD_IMAGES
                for command, extra in [("generate", []), ("viz", []), ("bench", ["--random-init", "tiny", "--repeats", "1"])]]
IMAGE_ERRORS += [(["generate", "--image", "/no/such/photo.jpg"], "image not found"), (["viz", "--image", "nope.png"], "image not found"),
                 (["generate", "--image", "/dev/zero"], "not a regular file"), (["ask", "--image", "{fifo_png}"], "not a regular file")]

BAD_CHECKPOINTS = [  # (world name, message)
    ("empty_dir", "no config.json"), ("config_not_json", "cannot parse"), ("config_is_a_list", "holds a None model"),
    ("config_bert", "holds a 'bert' model"), ("config_no_type", "holds a None model"), ("config_binary", "cannot parse"),
    ("patch_size_0", "patch_size must be a positive integer"), ("patch_size_negative", "patch_size must be a positive integer"),
    ("patch_size_string", "patch_size"), ("patch_larger_than_image", "larger than image_size"),
    ("image_size_0", "image_size must be a positive integer"), ("hidden_not_divisible", "attention heads"),
    ("layers_0", "num_hidden_layers must be a positive integer"), ("hidden_mismatch", "do not fit its config"),
    ("text_hidden_mismatch", ""), ("fewer_text_layers_in_weights", "do not fit its config"),
    ("truncated_weights", "cannot load the checkpoint"), ("garbage_weights", "cannot load the checkpoint"),
    ("next_patch_size_0", "patch_size must be a positive integer"), ("config_only", ""), ("a_file", "model directory not found"),
    ("fifo_config", "not a regular file"), ("loop_dir", "points back to itself"), ("model_type_list", "holds a ['llava'] model"),
    ("feature_layer_beyond", "vision_feature_layer must be a layer in -11..10"), ("feature_layer_string", "vision_feature_layer"),
    ("context_string", "max_position_embeddings"), ("vocab_0", "vocab_size must be a positive integer"),
    ("image_token_beyond_vocab", "image_token_index must be a token id"), ("layers_huge", "more than 1000"),
    ("text_layers_huge", "text_config.num_hidden_layers 1000000000 is more than 1000"),
    *[(name, "image_grid_pinpoints") for name in ("pinpoints_empty", "pinpoints_string", "pinpoints_not_tiles", "pinpoints_huge")],
    ("pinpoints_processor_differs", "the processor's image_grid_pinpoints"),
    ("tokenizer_garbage", "cannot load the processor"), ("tokenizer_missing", "cannot load the processor"),
    ("processor_config_missing", "the processor's patch_size is None"), ("preprocessor_list", "cannot load the processor"),
    ("preprocessor_missing", "preprocessor_config.json"), ("generation_config_list", "cannot load the checkpoint"),
]
CHECKPOINT_ERRORS = [([command, "--model", "{" + name + "}", *extra], message)
                     for name, message in BAD_CHECKPOINTS
                     for command, extra in [("generate", []), ("viz", []), ("bench", ["--stage", "select", "--batch", "1"])]]
CHECKPOINT_ERRORS += [(["build", "--model", "{" + name + "}", "--output", "{sandbox}/out", "--onnx-only"], message)
                      for name, message in BAD_CHECKPOINTS[:13]]
CHECKPOINT_ERRORS += [(["build", "--model", "{" + name + "}", "--output", "{sandbox}/out", "--onnx-only"], message)
                      for name, message in [("tokenizer_garbage", "cannot load the processor"), ("processor_config_missing", "patch_size"),
                                            ("pinpoints_processor_differs", "image_grid_pinpoints"), ("vocab_0", "vocab_size")]]

OUTPUT_ERRORS = [
    # build: --force replaces an earlier hivtp build and nothing else
    *[(["build", "--model", LLAVA, "--output", out, "--onnx-only", *force], message) for out, force, message in [
        (".", ["--force"], "current directory"), (".", [], "current directory"), ("./", ["--force"], "current directory"),
        ("..", ["--force"], "parent of the current directory"), ("../..", ["--force"], "parent of the current directory"),
        ("~", ["--force"], "home directory"), ("~/", [], "home directory"),  # a quoted '~' still means home
        ("{sandbox}/home", ["--force"], "home directory"), ("/", ["--force"], "filesystem root"),
        ("{not_a_build}", ["--force"], "only replaces an earlier hivtp build"), ("{not_a_build}", [], "pass --force"),
        ("{a_file}", ["--force"], "is a file"), ("{link_to_build}", ["--force"], "symbolic link"),
        ("{empty_dir}", ["--force"], "no manifest.json"), ("{manifest_list}", ["--force"], "not a hivtp manifest"),
        ("{manifest_no_files}", ["--force"], "damaged"), ("{manifest_not_json}", ["--force"], "cannot parse"),
        (LLAVA, ["--force"], "would replace the checkpoint"), (str(Path(LLAVA).parent), ["--force"], "would replace the checkpoint"),
        ("{a_file}/sub", [], "is a file, not a folder"), ("/proc/hivtp-out", [], "cannot write"),
        ("x" * 300, [], "longer than 255 bytes"), ("{loop_dir}", ["--force"], "points back to itself"),
        ("{loop_dir}/sub", [], "points back to itself"),
    ]],
    (["serve", "--repository-only", "{loop_dir}", "--force"], "points back to itself"),
    # files: never a folder, a device, an unwritable place or a wrong kind of file
    *[(["viz", "--out", out], message) for out, message in [
        ("{sandbox}/work", "is a folder"), (".", "is a folder"), ("{a_file}/x.png", "is a file, not a folder"),
        ("/proc/x.png", "cannot write"), ("/dev/null", "expected a .png"), ("picture.jpg", "expected a .png"),
        ("{not_a_build}", "is a folder"), ("y" * 300 + ".png", "longer than 255 bytes"), ("/dev/null/x.png", "not a folder"),
        ("{dangling}/x.png", "symbolic link to nothing"), ("{loop_dir}/x.png", "points back to itself"),
    ]],
    *[(["fidelity", "--out", out], message) for out, message in [
        ("{sandbox}/work", "is a folder"), ("{a_file}/r.json", "is a file, not a folder"), ("/proc/r.json", "cannot write"),
        ("table.csv", "expected a .json"), ("z" * 300 + ".json", "longer than 255 bytes"),
        ("{json_beside_folder_png}", "folder.png, and that is a folder"), ("{json_beside_fifo_png}", "fifo.png, which exists and is not"),
        ("{dangling}/r.json", "symbolic link to nothing"),
    ]],
    *[(["bench", "--random-init", "tiny", "--out-dir", out], message) for out, message in [
        ("{a_file}", "is a file, not a folder"), ("{a_file}/sub", "is a file, not a folder"), ("/proc/bench", "cannot write"),
        ("/dev/null", "is a file, not a folder"), ("{dangling}", "symbolic link to nothing"),
    ]],
]

ALL = ARGUMENT_ERRORS + REFUSED_OPTIONS + SERVE_ERRORS + DEVICE_ERRORS + IMAGE_ERRORS + CHECKPOINT_ERRORS + OUTPUT_ERRORS


def test_there_are_at_least_200_distinct_bad_command_lines() -> None:
    assert len({tuple(argv) for argv, _ in ALL}) >= 200


@pytest.mark.parametrize("argv, message", ALL, ids=[" ".join(a)[:70] for a, _ in ALL])
def test_refused_with_one_line_and_nothing_touched(argv, message, world, sandbox, capsys) -> None:
    if "--device" in argv and argv[argv.index("--device") + 1].startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            pytest.skip("CUDA is available here: cuda devices are valid")
    assert_refused(argv, message, world, sandbox, capsys)
