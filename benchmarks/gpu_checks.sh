#!/usr/bin/env bash
# GPU checks: the JAX code paths on a CUDA device, and the issue-size NTK benchmark.
#   OUT=some/dir bash benchmarks/gpu_checks.sh
# Needs jax with CUDA, equinox, optax and the package's dependencies importable
# (PYTHONPATH=src or an installed scimpute) and SCIMPUTE_DATA_DIR pointing at the datasets.
set -u
OUT=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:-}:src
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu_info.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu_info.txt"
# 1. the neural-network and kernel tests on the GPU
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/test_nn.py tests/methods/test_ntk.py \
    tests/methods/test_autoencoder.py 2>&1 | tail -5 | tee "$OUT/gpu_tests.txt"
# 2. NTK at the size (70 x 5000 x 978, 10% measured), numpy reference on 2000 targets
timeout 260 python3 benchmarks/ntk_scale.py --contexts 70 --perturbations 5000 \
    --reference-targets 2000 --tag gpu_70x5000 --out-dir "$OUT" 2>&1 | tail -25
# 3. style transfer on Kang, two held-out cell types
rm -f benchmarks/results/transfer_kang.json
timeout 150 python3 benchmarks/transfer_kang.py --types B,CD4T > "$OUT/transfer_kang_gpu.log" 2>&1 \
    && cp benchmarks/results/transfer_kang.json "$OUT/transfer_kang_gpu.json" \
    && cp benchmarks/results/transfer_kang.md "$OUT/transfer_kang_gpu.md"
tail -15 "$OUT/transfer_kang_gpu.log"
ls -la "$OUT"
