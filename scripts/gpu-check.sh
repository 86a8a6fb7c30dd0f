#!/usr/bin/env bash
# The GPU paths, checked for real (issue 33): run this on a machine with one or more GPUs; it takes a few
# minutes and prints one PASS, FAIL or SKIP line per check (logs under $GPU_CHECK_OUT), exit status 1 if a
# check failed. Without a GPU it runs the same checks on the CPU (device cpu, gloo): the test suite runs
# those, with GPU_CHECK_TINY=1 (tiny models and data).
#
#   scripts/gpu-check.sh                     # from the repository, with .venv set up (make test does it)
#   PYTHON=python3 GPU_CHECK_OUT=/tmp/gc scripts/gpu-check.sh
#
# Checks: an MLP family (vae) and a conv family (vqvae) each trained, resumed, evaluated and reported on
# the GPU; bf16 (auto precision picks it where the GPU has it natively, and the conv run asks for it);
# a GPU run resumed on the CPU (--device on --resume); aezoo.load(run, map_location="cuda"); a two-process
# torchrun killed after its first checkpoint and resumed: NCCL on two GPUs or more; on one GPU, two
# processes sharing it are refused in one line, and the two processes run on the CPU (gloo) instead.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/aezoo-gpu-check.XXXXXX)}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} AEZOO_DIST_TIMEOUT=${AEZOO_DIST_TIMEOUT:-120} PYTHONUNBUFFERED=1
FAILED=0

GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)") || {
    echo "FAIL python-and-torch (cannot run $PY)"; exit 1; }
if [ "$GPUS" -gt 0 ]; then
    DEV=cuda
    echo "NOTE $GPUS GPU(s): $("$PY" -c "import torch; print(torch.cuda.get_device_name(0))"); logs in $OUT"
else
    DEV=cpu
    echo "NOTE no GPU: CPU fallbacks (device cpu, gloo); logs in $OUT"
fi

if [ "${GPU_CHECK_TINY:-0}" = 1 ]; then
    DATA="digits?limit=256"; EP=1; BATCH=32; EVERY=2
    MLP=(--set "widths=[16]" --set latent_dim=2 --set train.threads=1)
    CONV=(--set hidden=8 --set num_codes=16 --set code_dim=4 --set res_blocks=1 --set train.threads=1)
else
    DATA=digits; EP=3; BATCH=64; EVERY=20
    MLP=(); CONV=()
fi

# check NAME COMMAND...: PASS or FAIL NAME, the command's output in $OUT/NAME.log
check() {
    local name=$1; shift
    local t0=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        echo "PASS $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s; see $OUT/$name.log)"; FAILED=1
    fi
}
aezoo() { "$PY" -m aezoo "$@"; }
# run_json RUN PYTHON-EXPRESSION: the expression, over m = RUN/run.json, must be true
run_json() {
    "$PY" - "$1" "$2" <<'EOF'
import json, sys
from pathlib import Path
m = json.loads((Path(sys.argv[1]) / "run.json").read_text())
ok = eval(sys.argv[2], {"m": m, "Path": Path, "run": Path(sys.argv[1])})
print(json.dumps({k: m.get(k) for k in ("finished", "epoch", "step", "device", "precision", "processes")}))
sys.exit(0 if ok else 1)
EOF
}
NATIVE_BF16=$("$PY" -c "import torch; print(int(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)))")
WANT_PRECISION=$([ "$NATIVE_BF16" = 1 ] && echo bf16 || echo fp32)
done_ok='m["finished"] and (run / "eval.json").is_file() and (run / "report.html").is_file()'

# --- one GPU: an MLP family and a conv family ---------------------------------------------------------
train_mlp() {
    aezoo train vae --data "$DATA" --out "$OUT/mlp" --epochs "$EP" --batch-size "$BATCH" --device "$DEV" --quiet \
        --overwrite "${MLP[@]}" --set train.checkpoint_every="$EVERY" &&
    run_json "$OUT/mlp" "$done_ok and m['device'].startswith('$DEV') and m['precision'] == '$WANT_PRECISION'"
}
check mlp-train-"$DEV" train_mlp
if [ "$DEV" = cuda ]; then
    echo "NOTE auto precision chose $WANT_PRECISION (native bf16: $NATIVE_BF16)"
fi
check mlp-resume aezoo train --out "$OUT/mlp" --resume --epochs $((EP + 1)) --quiet
check mlp-resumed-state run_json "$OUT/mlp" "$done_ok and m['epoch'] == $EP + 1"
if [ "$DEV" = cuda ]; then
    resume_on_cpu() {
        aezoo train --out "$OUT/mlp" --resume --epochs $((EP + 2)) --device cpu --quiet &&
        run_json "$OUT/mlp" "$done_ok and m['device'] == 'cpu' and m['epoch'] == $EP + 2"
    }
    check mlp-gpu-run-resumed-on-cpu resume_on_cpu
else
    echo "SKIP mlp-gpu-run-resumed-on-cpu (no GPU)"
fi
check mlp-eval aezoo eval "$OUT/mlp" --metrics cheap --quiet
check mlp-report aezoo report "$OUT/mlp" --quiet

CONV_PRECISION=()
if [ "$NATIVE_BF16" = 1 ]; then CONV_PRECISION=(--set train.precision=bf16); fi
train_conv() {
    aezoo train vqvae --data "$DATA" --out "$OUT/conv" --epochs "$EP" --batch-size "$BATCH" --device "$DEV" --quiet \
        --overwrite "${CONV[@]}" "${CONV_PRECISION[@]}" --set train.checkpoint_every="$EVERY" &&
    run_json "$OUT/conv" "$done_ok and m['device'].startswith('$DEV') and m['precision'] == '$WANT_PRECISION'"
}
check conv-train-"$DEV"-"$WANT_PRECISION" train_conv
check conv-resume aezoo train --out "$OUT/conv" --resume --epochs $((EP + 1)) --quiet
check conv-resumed-state run_json "$OUT/conv" "$done_ok and m['epoch'] == $EP + 1"
check conv-eval aezoo eval "$OUT/conv" --metrics cheap --quiet
check conv-report aezoo report "$OUT/conv" --quiet

# --- aezoo.load onto the device -----------------------------------------------------------------------
load_on_device() {
    "$PY" - "$OUT" "$DEV" <<'EOF'
import json, sys
import torch
import aezoo
out, dev = sys.argv[1], sys.argv[2]
data = aezoo.data.load(json.loads(open(f"{out}/mlp/run.json").read())["data"])
for run in ("mlp", "conv"):
    here, there = aezoo.load(f"{out}/{run}"), aezoo.load(f"{out}/{run}", map_location=dev)
    places = {p.device.type for p in there.parameters()} | {b.device.type for b in there.buffers()}
    assert places == {dev}, (run, places)
    x = data.test.x[:16]
    with torch.no_grad():
        a, b = here(x), there(x.to(dev)).cpu()
    print(run, "on", places, "difference to the CPU: max", float((a - b).abs().max()), "mean", float((a - b).abs().mean()))
    # the MLP matches closely; convolutions may use TF32 on a GPU, and a code flipped by it moves a patch
    assert torch.allclose(a, b, atol=1e-3) if run == "mlp" else float((a - b).abs().mean()) < 0.02, run
EOF
}
check load-map-location-"$DEV" load_on_device

# --- two processes: torchrun, killed after its first checkpoint and resumed -------------------------------
free_port() { "$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])"; }
torchrun() { "$PY" -m torch.distributed.run --nproc-per-node=2 --master-port="$(free_port)" -m aezoo "$@"; }
TDEV=$DEV
if [ "$GPUS" = 1 ]; then  # two ranks cannot share one GPU under NCCL: refused, in one line
    shared_refused() {
        local err="$OUT/shared.err"
        torchrun train vae --data "$DATA" --out "$OUT/shared" --epochs 1 --device cuda --quiet "${MLP[@]}" 2>"$err"
        local code=$?
        cat "$err"
        [ "$code" != 0 ] && [ "$(grep -c '^aezoo: error:' "$err")" = 1 ] &&
            grep -q '^aezoo: error: ranks 0 and 1 would share one GPU' "$err"
    }
    check torchrun-two-ranks-on-one-gpu-refused shared_refused
    TDEV=cpu
    echo "NOTE one GPU: the two-process run trains on the CPU (gloo; the group is still gloo+NCCL)"
fi
kill_and_resume() {
    local run="$OUT/dist"
    rm -rf "$run"
    setsid "$PY" -m torch.distributed.run --nproc-per-node=2 --master-port="$(free_port)" -m aezoo train vae \
        --data "$DATA" --out "$run" --epochs 1000 --batch-size $((BATCH / 2)) --device "$TDEV" --quiet \
        "${MLP[@]}" --set train.checkpoint_every="$EVERY" &
    local pid=$! waited=0
    while [ ! -f "$run/checkpoint.safetensors" ] && [ $waited -lt 1200 ]; do sleep 0.1; waited=$((waited + 1)); done
    local ranks
    ranks=$(pgrep -P "$pid")  # torchrun's workers: killed with it, and waited for (they hold the run's lock)
    kill -KILL -- -"$pid" $ranks 2>/dev/null; wait "$pid" 2>/dev/null
    for r in $ranks; do while kill -0 "$r" 2>/dev/null; do sleep 0.1; done; done
    [ -f "$run/checkpoint.safetensors" ] || { echo "no checkpoint within 120 s"; return 1; }
    run_json "$run" "not m['finished']" || return 1
    torchrun train --out "$run" --resume --epochs 2 --quiet &&
    run_json "$run" "$done_ok and m['processes'] == 2 and m['device'].startswith('$TDEV')"
}
if [ "$TDEV" = cuda ]; then BACKEND=nccl; else BACKEND=gloo; fi
check torchrun-2-"$TDEV"-"$BACKEND"-killed-and-resumed kill_and_resume

[ "$FAILED" = 0 ] && echo "all checks passed" || echo "some checks FAILED"
exit "$FAILED"
