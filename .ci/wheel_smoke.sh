#!/usr/bin/env bash
# The wheel works on its own: build spd-yolo's wheel from the files git would commit, install it (not editable, with the
# `export` extra) into a fresh venv outside the repository, and run the commands a user runs there, from a folder
# outside the repository, with PYTHONPATH unset: import, model table, every console command's --help, a 1-epoch
# train on tiny synthetic data, loading the checkpoint in plain ultralytics, val (COCO table), ONNX export with the
# parity check, detect. Every step's output goes to a log; a failing step prints its log's tail and stops the run.
# Last line: `wheel_smoke: N passed, N failed[, N skipped]`. Exit 0 only if every step passed.
#
# Usage: bash .ci/wheel_smoke.sh          (or `make wheel-smoke`; CI runs it after `make test`)
# Env: PYTHON (base interpreter for the venv, default python3), KEEP=1 (keep the temp folder, for debugging),
# STEP_TIMEOUT (seconds per step, default 900).
# Needs ~6 GB free disk for the venv (torch's CUDA build). pip's cache stays on (PIP_NO_CACHE_DIR is unset), so what
# pip cached while `make test` built .venv is reused; torch, torchvision and the nvidia libraries come from the
# machine's local wheel folders (pip reads them in place, no cache needed), and most of the install time is unpacking
# them. pip installs with --no-compile: bytecode is written at first import
# instead (only of the modules imported: ~40 s less than compiling all of torch on 2 cores).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd -P)"
PYTHON="${PYTHON:-python3}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/spd-wheel-smoke.XXXXXX")"
WORK="$(cd "$WORK" && pwd -P)"
VENV="$WORK/venv"
VPY="$VENV/bin/python"
RUN="$WORK/cwd"        # the user's working folder: data, runs, exports
LOGS="$WORK/logs"
mkdir -p "$RUN" "$LOGS" "$WORK/dist" "$WORK/yolo-config"

cleanup() {
    if [[ "${KEEP:-0}" == 1 ]]; then echo "wheel_smoke: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # runs the EXIT trap

# A user's shell: nothing of the repo on the import path, offline, no auto-install, ultralytics settings in a temp
# folder. pip's cache stays on (the default). Bytecode may be written (see --no-compile below).
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_NO_CACHE_DIR PIP_REQUIRE_VIRTUALENV PYTHONDONTWRITEBYTECODE
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false YOLO_CONFIG_DIR="$WORK/yolo-config"
export SMOKE_REPO="$REPO"  # read by the import check only (never on sys.path)
export REPO PYTHON WORK VENV VPY RUN LOGS  # for the steps, each run by `timeout bash -c`
STEP_TIMEOUT="${STEP_TIMEOUT:-900}"
cd "$RUN"
case "$RUN/" in "$REPO"/*) echo "wheel_smoke: temp folder $RUN is inside the repo $REPO" >&2; exit 1 ;; esac

STEPS=(
    "build wheel" "wheel contents" "install wheel[export] into a fresh venv"
    "1 import from site-packages" "2 model table" "3 console --help" "4 train 1 epoch" "5 load in plain ultralytics"
    "6 spd-val" "7 spd-export onnx + parity" "8 spd-detect"
)
passed=0
failed=0
START=$SECONDS

summary() {
    echo "wheel_smoke: $passed passed, $failed failed$(
        s=$(( ${#STEPS[@]} - passed - failed )); (( s > 0 )) && echo ", $s skipped")"
}

# step NAME FUNCTION: run FUNCTION in its own bash (with set -euo pipefail, killed after $STEP_TIMEOUT s) with its
# output in a log; on success print the log lines matching $SHOW (a grep -E pattern), on failure the log's tail, the
# summary, and exit 1.
step() {
    local name="$1" fn="$2" log rc t0=$SECONDS
    log="$LOGS/$(printf %02d $((passed + failed + 1))).log"
    echo "--- wheel_smoke: $name"
    set +e
    timeout --kill-after=30 "$STEP_TIMEOUT" bash -c "set -euo pipefail; $fn" </dev/null >"$log" 2>&1
    rc=$?
    (( rc == 124 || rc == 137 )) && echo "    ... timed out after $STEP_TIMEOUT s"
    set -e
    if (( rc == 0 )); then
        passed=$((passed + 1))
        if [[ -n "${SHOW:-}" ]]; then grep -E -- "$SHOW" "$log" | tail -n 20 | sed 's/^/    /' || true; fi
        echo "ok: $name ($((SECONDS - t0)) s)"
    else
        failed=$((failed + 1))
        echo "    ... last 60 lines of the output of '$name':"
        tail -n 60 "$log" | sed 's/^/    /'
        echo "FAILED: wheel smoke step '$name' (exit $rc, $((SECONDS - t0)) s)"
        summary
        exit 1
    fi
    SHOW=""
}

# --- setup ---------------------------------------------------------------------------------------------------------

build_wheel() {
    # Build from a copy of the files git would commit (tracked + untracked-not-ignored): no stale build/ folder,
    # egg-info or runs/ of the working tree can leak into (or hide a gap in) the wheel.
    mkdir -p "$WORK/src"
    if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$REPO" && git ls-files -z --cached --others --exclude-standard) |
            (cd "$REPO" && tar -cf - --null --ignore-failed-read -T -) | tar -xf - -C "$WORK/src"
    else
        tar -C "$REPO" -cf - --exclude=.venv --exclude=build --exclude=dist --exclude=runs --exclude='*.egg-info' . |
            tar -xf - -C "$WORK/src"
    fi
    local free_kb
    free_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
    (( free_kb > 7 * 1024 * 1024 )) || { echo "only $((free_kb / 1024)) MiB free under $WORK: the venv needs ~6 GB"; exit 1; }
    "$PYTHON" -m venv "$VENV"
    "$VPY" -m pip install --quiet --upgrade pip
    "$VPY" -m pip wheel --no-deps -w "$WORK/dist" "$WORK/src"
    ls "$WORK"/dist/spd_yolo-*.whl
}

wheel_contents() {
    # Every package file of the source tree is in the wheel, where the package-dir mapping puts it; nothing else
    # of the repo (tests, benchmarks, root scripts, a bare top-level `models` or `yaml_configs`).
    "$VPY" - "$WORK/src" "$WORK"/dist/spd_yolo-*.whl <<'EOF'
import sys, zipfile
from pathlib import Path
src, wheel = Path(sys.argv[1]), sys.argv[2]
names = {n for n in zipfile.ZipFile(wheel).namelist() if ".dist-info/" not in n}
expected = {"spd_modules.py"}
expected |= {p.relative_to(src).as_posix() for p in (src / "spd_yolo").rglob("*") if p.is_file()
             and "__pycache__" not in p.parts and p.suffix != ".pyc"}
expected |= {"spd_yolo/models/" + p.name for p in (src / "models").glob("*.py")}
expected |= {"spd_yolo/yaml_configs/" + p.name for p in (src / "yaml_configs").glob("*.yaml")}
missing, extra = sorted(expected - names), sorted(names - expected)
print(f"{wheel}: {len(names)} files, {sum(n.endswith('.yaml') for n in names)} YAMLs")
assert not missing, f"missing from the wheel: {missing}"
assert not extra, f"in the wheel but not a package file of the repo: {extra}"
assert any(n.startswith("spd_yolo/layers/") for n in names) and any(n.startswith("spd_yolo/yaml_configs/") for n in names)
top = {n.split("/")[0] for n in names}
assert top == {"spd_yolo", "spd_modules.py"}, f"top-level names: {sorted(top)}"
EOF
}

install_wheel() {
    local wheel
    wheel=$(ls "$WORK"/dist/spd_yolo-*.whl)
    "$VPY" -m pip install --no-compile --progress-bar off "${wheel}[export]"
    "$VPY" -m pip check
    "$VPY" -m pip list 2>/dev/null | grep -E -i '^(spd-yolo|ultralytics|torch|torchvision|onnx|onnxruntime) '
}

# --- the smoke set (run from $RUN, outside the repo) ------------------------------------------------------------------

import_check() {
    "$VPY" -c "import spd_yolo, spd_modules; print(spd_yolo.__file__)"
    "$VPY" - <<'EOF'
import importlib.metadata as md, json, os, sys, sysconfig
from pathlib import Path
repo = Path(os.environ["SMOKE_REPO"]).resolve()
site = Path(sysconfig.get_paths()["purelib"]).resolve()
inside = lambda path, folder: path == folder or folder in path.parents
for p in sys.path:
    assert not inside(Path(p or ".").resolve(), repo), f"the repo is on sys.path: {p!r}"
import spd_yolo, spd_modules, spd_yolo.models, spd_yolo.layers
for m in (spd_yolo, spd_modules, spd_yolo.models, spd_yolo.layers):
    f = Path(m.__file__).resolve()
    assert inside(f, site) and not inside(f, repo), f"{m.__name__} from {f}, not from {site}"
dist = md.distribution("spd-yolo")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
assert not direct.get("dir_info", {}).get("editable"), f"an editable install: {direct}"
assert not any(str(f).startswith(("models/", "yaml_configs/", "tests/", "benchmarks/")) for f in dist.files)
print(f"spd-yolo {dist.version} from {site}: not editable, repo not on sys.path")
EOF
}

model_table() {
    "$VPY" -m spd_yolo.models.summary yolov5n-SPD yolov8n-SPD --imgsz 640 | tee "$LOGS/table.txt"
    grep -q -E '^\| yolov5n-SPD' "$LOGS/table.txt"
    grep -q -E '^\| yolov8n-SPD' "$LOGS/table.txt"
}

console_help() {
    local c out
    for c in spd-yolo spd-train spd-val spd-detect spd-export spd-upgrade; do
        out=$("$VENV/bin/$c" --help)
        if [[ $c == spd-yolo ]]; then grep -q 'spd-yolo info model=NAME' <<<"$out"; else grep -q '^usage:' <<<"$out"; fi
        echo "$c --help: exit 0, $(wc -l <<<"$out") lines"
    done
}

train() {
    "$VPY" -c "from spd_yolo.data.synth import generate_demo_dataset; print(generate_demo_dataset('data', n_train=8, n_val=4, imgsz=64, video_frames=0, progress=False))"
    test -f "$RUN/data/data.yaml"
    "$VENV/bin/spd-yolo" detect train model=yolov5n-SPD.yaml data="$RUN/data/data.yaml" epochs=1 imgsz=64 batch=4 \
        workers=0 device=cpu project="$RUN/runs" name=t
    ls -l "$RUN/runs/t/weights/best.pt"
}

plain_load() {
    "$VPY" -c "from ultralytics import YOLO; m = YOLO('runs/t/weights/best.pt'); import sys; assert 'spd_yolo' in sys.modules; print(type(m.model).__name__, m.model.model[0])"
}

val() {
    "$VENV/bin/spd-val" --weights runs/t/weights/best.pt --data data/data.yaml --img 64 | tee "$LOGS/val.txt"
    grep -q 'AP_S' "$LOGS/val.txt"
}

export_onnx() {
    "$VENV/bin/spd-export" --weights runs/t/weights/best.pt --include onnx --img 64 | tee "$LOGS/export.txt"
    grep -q 'ONNX parity' "$LOGS/export.txt"
    ls -l runs/t/weights/best.onnx
}

detect() {
    local image
    image=$(ls data/images/val/* | head -n 1)
    "$VENV/bin/spd-detect" --weights runs/t/weights/best.pt --source "$image" --img 64 --project det
    test -s "det/exp/$(basename "$image")"
    echo "annotated image: $RUN/det/exp/$(basename "$image")"
}

export -f build_wheel wheel_contents install_wheel import_check model_table console_help train plain_load val \
    export_onnx detect
echo "wheel_smoke: repo $REPO, temp folder $WORK ($("$PYTHON" --version 2>&1))"
SHOW='\.whl$'                                   step "${STEPS[0]}" build_wheel
SHOW='files,'                                   step "${STEPS[1]}" wheel_contents
SHOW='^(spd-yolo|ultralytics|torch|torchvision|onnx|onnxruntime) ' \
                                                step "${STEPS[2]}" install_wheel
SHOW='^(/|spd-yolo )'                           step "${STEPS[3]}" import_check
SHOW='^\| (model|yolov)'                        step "${STEPS[4]}" model_table
SHOW='--help: exit 0'                           step "${STEPS[5]}" console_help
SHOW='(best\.pt|data\.yaml)$'                   step "${STEPS[6]}" train
SHOW='SpaceToDepth|Sequential|Conv|Model'       step "${STEPS[7]}" plain_load
SHOW='^ *(metric|AP_S|AP |AP50) '               step "${STEPS[8]}" val
SHOW='ONNX parity|^onnx:'                       step "${STEPS[9]}" export_onnx
SHOW='detections|annotated image'               step "${STEPS[10]}" detect
echo "wheel_smoke: total $((SECONDS - START)) s"
summary
