"""Make the Python environment that Triton 2.51's Python backend stub (nvidia-pytriton 0.7.0) runs `hivtp serve` in.

    python scripts/make_serve_env.py DIR          # then: hivtp serve --python-env DIR  (or HIVTP_SERVE_PYTHON_ENV=DIR)

Why: that stub's pybind11 reads numpy's pre-2.0 ABI and aborts on string tensors under numpy 2 (measured:
"unpack_from requires a buffer of at least 134744076 bytes" in deserialize_bytes_tensor), while hivtp's
own environment may hold numpy 2. DIR is a virtual environment with numpy < 2 whose site-packages then
add this interpreter's (hivtp, torch, transformers, ...), so nothing else is installed twice. Triton
containers need none of this: their stub is built against their own numpy.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path


def main(target: str) -> None:
    env = Path(target).resolve()
    if env.exists():
        sys.exit(f"make_serve_env: {env} exists; remove it first")
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python3"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy<2"], check=True)
    env_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    here = sysconfig.get_paths()["purelib"]  # addsitedir also runs its .pth files (the editable hivtp install)
    (Path(env_site) / "zz_hivtp_serve_overlay.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    check = "import numpy, hivtp, torch, transformers; print(numpy.__version__)"
    version = subprocess.run([str(python), "-c", check], check=True, capture_output=True, text=True).stdout.strip()
    print(f"made {env}: numpy {version}, packages of {sys.prefix}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/make_serve_env.py DIR")
    main(sys.argv[1])
