"""Where hivtp writes: one rule for every output path, checked before any model is loaded.

- Files (`bench`, `viz`, `fidelity`): the path the user names, or a fresh name under a per-user
  results folder; never a directory, a device or a folder we cannot write, never a silent
  overwrite of a name the user did not give.
- Build folders (`build --output`): a new folder, or with `--force` an earlier hivtp build that holds
  nothing hivtp did not write. Never the working directory or one of its parents, the home directory,
  the filesystem root, the checkpoint or a folder that holds it.
JSON files hivtp reads back (manifests, listings, checkpoint configs) go through `read_json`.
Light on purpose (no torch): commands call it before they import anything heavy.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS_ENV = "HIVTP_RESULTS"


def check_not_special(path: str | Path, what: str) -> None:
    """Refuse a pipe, socket or device where a file is read: reading one blocks or never ends. A missing path
    or a folder is left to the reader, which names it in its own words."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ValueError(f"{what} {path} is not a regular file (a pipe, socket or device)")


def read_json(path: Path, missing: str) -> Any:
    """The JSON value in `path`, or one ValueError line: `missing` when there is no such file."""
    check_not_special(path, "JSON file")
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(missing) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse {path}: {err}") from None
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None


def results_dir(command: str) -> Path:
    """Per-user default folder of a command's results: $HIVTP_RESULTS/<command>, else the XDG data home's."""
    root = os.environ.get(RESULTS_ENV) or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share"), "hivtp", "results"
    )
    return Path(root) / command


def fresh_name(folder: Path, stem: str, suffix: str) -> Path:
    """folder/stem-<UTC time>suffix, with -2, -3, ... if that exists: defaults never replace a file."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path = folder / f"{stem}-{stamp}{suffix}"
    n = 2
    while path.exists() or path.with_suffix(".png").exists():
        path, n = folder / f"{stem}-{stamp}-{n}{suffix}", n + 1
    return path


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:  # lexists: a dangling link is there, in the way
        path = path.parent
    return path


def check_writable_folder(folder: Path, option: str) -> None:
    """folder exists and we may create files in it, or it can be created under a folder we may write."""
    existing = _nearest_existing(folder)
    if existing.is_symlink() and not existing.exists():
        raise ValueError(f"{option}: cannot create {folder}: {existing} is a symbolic link to nothing ({os.readlink(existing)})")
    if not existing.is_dir():
        raise ValueError(f"{option}: cannot create {folder}: {existing} is a file, not a folder")
    try:  # a real probe: access() says yes to root on read-only mounts, /proc and /sys
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise ValueError(f"{option}: cannot write in {existing}: {err.strerror}") from None


def _check_name_lengths(path: Path, option: str) -> None:
    limit = 255  # NAME_MAX of every common Linux / macOS file system
    too_long = [part for part in path.parts if len(os.fsencode(part)) > limit]
    if too_long:
        raise ValueError(f"{option}: a path component is longer than {limit} bytes: {too_long[0][:40]}...")


def check_output_file(path: Path, option: str, suffix: str, beside: tuple[str, ...] = ()) -> Path:
    """The absolute path to write a `suffix` file to (the user named it: replacing it is what they asked),
    and the files of suffixes `beside` written next to it (e.g. a figure) checked the same way."""
    path = Path(os.path.abspath(path))
    _check_name_lengths(path, option)
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder; pass a file path such as {path / ('result' + suffix)}")
    if path.suffix.lower() != suffix:
        raise ValueError(f"{option} {path}: expected a {suffix} file name")
    for target in (path, *(path.with_suffix(other) for other in beside)):
        if target.is_dir():
            raise ValueError(f"{option} {path}: hivtp would write {target}, and that is a folder")
        if target.exists() and not target.is_file():
            raise ValueError(f"{option} {path}: hivtp would write {target}, which exists and is not a regular file")
    check_writable_folder(path.parent, option)
    return path


def check_output_folder(path: Path, option: str) -> Path:
    """A folder that files will be created in (it may exist already)."""
    path = Path(os.path.abspath(path))
    _check_name_lengths(path, option)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file, not a folder")
    check_writable_folder(path, option)
    return path


def check_not_an_input(output: Path, option: str, inputs: dict[Path | None, str]) -> None:
    """output (a file to write) is none of the command's `inputs` (path -> what it is; None: not given) and lies
    in none of them: a result written over an image, into a checkpoint or into the folder of images read."""
    resolved = output.resolve()
    for source, what in inputs.items():
        if source is None:
            continue
        source = source.resolve()
        if resolved == source:
            raise ValueError(f"{option} {output} is {what}: pick another file name")
        if source in resolved.parents:
            raise ValueError(f"{option} {output} is inside {what} {source}: write it elsewhere")


def output_file(given: Path | None, option: str, suffix: str, command: str, stem: str, beside: tuple[str, ...] = ()) -> Path:
    """The checked path the user gave, else a fresh name under the per-user results folder."""
    if given is not None:
        return check_output_file(given, option, suffix, beside)
    folder = check_output_folder(results_dir(command), f"the results folder (${RESULTS_ENV})")
    return fresh_name(folder, stem, suffix)


def protected_folders() -> dict[Path, str]:
    """Folders no hivtp output may be or replace."""
    cwd = Path.cwd().resolve()
    protected = {parent: "a parent of the current directory" for parent in cwd.parents}
    protected.update({cwd: "the current directory", Path.home().resolve(): "the home directory",
                      Path(cwd.anchor): "the filesystem root"})
    return protected


Listing = Callable[[Path], set]  # folder -> the relative paths hivtp wrote there; ValueError: not one of ours


def check_owned_output(output: Path, option: str, force: bool, kind: str, listed: Listing, sources: dict[Path, str]) -> Path:
    """The resolved output folder of a `kind` (a hivtp build, a model repository), checked before anything runs.

    Refused: a protected folder, one of `sources` (path -> what it is) or a folder that holds one, a link,
    and an existing folder unless `force` and it is an earlier `kind` holding nothing hivtp did not write.
    """
    resolved = output.resolve()
    _check_name_lengths(resolved, option)
    what = protected_folders().get(resolved)
    if what:
        raise ValueError(f"{option} {output} is {what}: hivtp writes a {kind} into a folder of its own")
    for source, name in sources.items():
        if resolved == source.resolve() or resolved in source.resolve().parents:
            raise ValueError(f"{option} {output} would replace {name} {source}")
    if output.is_symlink():
        raise ValueError(f"{option} {output} is a symbolic link; pass the folder it points to")
    if output.exists():
        if not force:
            raise ValueError(f"{output} exists: pass --force to replace an earlier hivtp {kind}")
        if not output.is_dir():
            raise ValueError(f"--force only replaces an earlier hivtp {kind}, and {output} is a file")
        try:
            ours = listed(output)
        except ValueError as err:
            raise ValueError(f"--force only replaces an earlier hivtp {kind}: {err}") from None
        found = (p.relative_to(output).as_posix() for p in output.rglob("*") if not p.is_dir() or p.is_symlink())
        foreign = sorted(name for name in found if name not in ours)
        if foreign:
            raise ValueError(f"{output} holds files hivtp did not write ({', '.join(foreign[:3])}): --force refuses to delete them")
    check_writable_folder(resolved.parent, option)
    return resolved


def check_build_output(output: Path, model_dir: Path, force: bool) -> Path:
    """`hivtp build --output`: see check_owned_output."""
    from hivtp.build.manifest import listed_files

    return check_owned_output(output, "--output", force, "build", listed_files, {model_dir: "the checkpoint"})
