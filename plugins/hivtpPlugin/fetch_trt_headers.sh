#!/usr/bin/env bash
# Fetch the TensorRT 10.14.1 API headers the plugin compiles against, without TensorRT itself.
#
#   plugins/hivtpPlugin/fetch_trt_headers.sh [DEST]     (default: plugins/hivtpPlugin/.trt-headers, gitignored)
#
# Source: the PyPI wheel kernel-lens==2.0.1, which bundles TensorRT 10.14.1's public headers
# (Apache-2.0). Only the eight headers the plugin includes are extracted; the wheel's sha256 and each
# header's sha256 are pinned below, so a changed upload fails here instead of compiling silently.
# The wheel's NvInfer.h / NvInferImpl.h / NvInferRuntime.h / NvInferPlugin.h differ from NVIDIA's
# v10.14 tag (see README.md "Known issues"); of those the plugin only includes NvInferRuntime.h and
# NvInferImpl.h, whose differences sit behind ENABLE_FEATURE_DISABLE_RUNTIME_ALLOCATION, which
# hivtpCommon.h refuses to see defined.
# Set PIP to choose the pip (default: python3 -m pip).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${1:-$here/.trt-headers}"
pip_cmd=(${PIP:-python3 -m pip})
wheel_sha256="07cc714e8b5e7f34b672f7c7fad93febe7c747be5837ba276b1527370134ffe0"
headers_sha256="
f98c5aa42512db944fff22e66b2e67fdc1ba65ca525be2cc9f2474f656f01356  NvInferRuntime.h
a6f63415b62e84ba5ac177f113e536cbd07e71fd0e444eef8b1972a62e5c1011  NvInferImpl.h
9461c9d07403c5dd1f8a6dea17fa5c3fe5cef7c4290c6768370a1d8139d4ac5d  NvInferRuntimeCommon.h
f7abd0bca8a2641ad92f270b53e7843a1eaf8c56568cbaf7bf8d5878330c4ec9  NvInferRuntimeBase.h
d337b34b7b7efc1c65ba3405a6551389063669cb0c51704f91578b5f817999fc  NvInferRuntimePlugin.h
774e457b2e80f27502ea1aed8132949f6e0788251b5374948e1bfdc9de9fb0ee  NvInferPluginBase.h
3e10fe5b85545f2e956e6935271badf0b1c72553b698000a61d46d69c5d53030  NvInferLegacyDims.h
950df353f2c1f5d322862e4fd407f5785fc994b146998574da3174dee85855fa  NvInferVersion.h
"

if [[ -f "$dest/include/NvInferRuntime.h" ]] && (cd "$dest/include" && sha256sum --quiet -c - <<<"$headers_sha256") 2>/dev/null; then
    echo "TensorRT 10.14.1 headers already in $dest/include"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: "kernel-lens==2.0.1" -d "$tmp"
wheel="$(ls "$tmp"/kernel_lens-2.0.1-*.whl)"
echo "$wheel_sha256  $wheel" | sha256sum --quiet -c - || { echo "kernel-lens wheel sha256 mismatch" >&2; exit 1; }

mkdir -p "$dest/include"
names=$(awk 'NF == 2 {print $2}' <<<"$headers_sha256")
python3 - "$wheel" "$dest/include" $names <<'PY'
import sys, zipfile
wheel, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with open(f"{out}/{name}", "wb") as f:
            f.write(z.read(f"kernel_lens/include/tensorrt/{name}"))
PY
(cd "$dest/include" && sha256sum --quiet -c - <<<"$headers_sha256") || { echo "header sha256 mismatch" >&2; exit 1; }
echo "kernel-lens==2.0.1 (TensorRT 10.14.1 headers)" > "$dest/SOURCE"
echo "TensorRT 10.14.1 headers in $dest/include"
