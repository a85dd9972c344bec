#!/usr/bin/env bash
# Every GPU figure of issue 15 in one run, about 8 minutes on an H200 (nothing here needs the network).
#
#   bash scripts/gpu_perf.sh            # on a CUDA machine, from the repository root
#
# With the workplace's device tool (the plugin build needs the TensorRT headers fetched here first,
# plugins/hivtpPlugin/fetch_trt_headers.sh, because the device machine has no network):
#   run(command="bash scripts/gpu_perf.sh", carry=["plugins/hivtpPlugin/.trt-headers"], timeout_s=590)
#
# Steps (each under its own timeout, so one slow step cannot eat the others' time):
#   1. scripts/gpu_check_kernels.py: Triton score / select / gather = reference (B 1/8/32 x paper/budget x
#      fp16/bf16/fp32), then score + select + gather next to the encoder at B 1/8/32 (target < 1%)
#   2. the plugin built here (sm_90a cubins from this machine's Triton), its own launch path (embedded cubins ->
#      CUDA runtime) = reference (tests/test_plugin_host.py -k gpu)
#   3. hivtp bench --stage vision, LLaVA-1.5 and LLaVA-NeXT dimensions: stock / floor / hivtp on CUDA
#   4. hivtp bench --stage e2e, both models, batch 1, 20 repeats: TTFT <= 1.05 x bound in every row
#   5. the same for LLaVA-1.5 with --compile (full, paper, budget 64): paper TTFT >= 40% below full
#   6. scripts/gpu_targets.py over the files 1-5 wrote: one line per target, results/gpu/targets-*.json
# Results land in results/ as usual; $OUT (when set) gets the log and one archive of this run's files.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu}
mkdir -p "$out" results/gpu results/bench
log="$out/gpu-perf.log"
: > "$log"
export PYTHONUNBUFFERED=1
export HIVTP_COMMIT=${HIVTP_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
marker=$(mktemp)

step() {  # step SECONDS COMMAND...: run it under a timeout, log its output and exit code
  local limit=$1
  shift
  echo "=== $(date -u +%T) $* (timeout ${limit}s)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "=== rc=${PIPESTATUS[0]}" | tee -a "$log"
}

nvidia-smi --query-gpu=name,driver_version --format=csv 2>&1 | tee -a "$log"
python3 -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" | tee -a "$log"
python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -n 2 | tee -a "$log"

step 80 python3 scripts/gpu_check_kernels.py
# the plugin with this machine's Triton, sm_90a only (a quarter of the AOT compile), then its GPU tests
step 80 bash -c "cmake -S plugins/hivtpPlugin -B .build-plugin/gpu -G Ninja -DHIVTP_PYTHON=$(command -v python3) \
  -DHIVTP_KERNEL_SOURCE=triton -DHIVTP_CUDA_ARCHS=sm_90a -DCMAKE_BUILD_TYPE=Release >/dev/null \
  && cmake --build .build-plugin/gpu -j 16 --target hivtp_gpu_smoke >/dev/null && echo built"
step 30 env HIVTP_GPU_SMOKE=.build-plugin/gpu/hivtp_gpu_smoke python3 -m pytest -q -p no:cacheprovider tests/test_plugin_host.py -k gpu
step 35 python3 -m hivtp.cli bench --random-init llava-1.5-7b --stage vision --out-dir results/bench
step 35 python3 -m hivtp.cli bench --random-init llava-next-7b --stage vision --out-dir results/bench
step 60 python3 -m hivtp.cli bench --random-init llava-1.5-7b --stage e2e --batch 1 --new-tokens 4 --out-dir results/bench
step 90 python3 -m hivtp.cli bench --random-init llava-next-7b --stage e2e --batch 1 --new-tokens 4 --out-dir results/bench
step 150 python3 -m hivtp.cli bench --random-init llava-1.5-7b --stage e2e --batch 1 --new-tokens 4 --budgets 64 --compile --out-dir results/bench

mapfile -t written < <(find results/gpu results/bench -name '*.json' -newer "$marker" ! -name 'targets-*' | sort)
step 15 python3 scripts/gpu_targets.py "${written[@]}"
if [ "$out" != results/gpu ]; then
  mapfile -t written < <(find results/gpu results/bench -type f -newer "$marker" | sort)
  tar czf "$out/gpu-perf-results.tgz" "${written[@]}" && echo "archived ${#written[@]} files in $out/gpu-perf-results.tgz"
fi
rm -f "$marker"
