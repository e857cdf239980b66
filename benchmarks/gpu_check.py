# SPD-YOLO, AGPL-3.0 license
"""gpu_check.py: one script that checks SPD-YOLO on a CUDA GPU (correctness, end to end, speed) and records it.

Usage:
    python benchmarks/gpu_check.py --out runs/gpu_check                         # full check on CUDA GPU 0
    python benchmarks/gpu_check.py --device 1 --out runs/gpu_check              # another GPU
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gpu_check    # checks this script (minutes)

Checks (each one recorded as pass / fail / skip with its measurement, tolerance and error; a failing check does not
stop the others; the exit status is 1 if any check failed):

1. Correctness
   - SPD layer (space_to_depth) on the device == CPU reference: fp32 exact (torch.equal); fp16 and bf16 outputs and
     input gradients equal to the CPU computation in the same dtype (pure data movement, so exact).
   - yolov5n-SPD and yolo11n-SPD (spd_yolo.build_model, seed 0, eval, 1x3x256x256): device vs CPU, fp32 with TF32
     disabled; pass when max|diff| <= 1e-3 * max(1, max|reference|).
   - torch.compile(yolov5n-SPD) vs eager on the device (CUDA: inductor; CPU: backend "aot_eager"), same tolerance.
   - channels_last model and input vs contiguous eager on the device, same tolerance.
2. End to end (root scripts as subprocesses with this python; logs under OUT/logs/)
   - demo data (spd_yolo.data.synth.generate_demo_dataset)
   - train.py --epochs 3, interrupted with SIGINT once weights/last.pt exists (after epoch 1), then
     train.py --resume RUN; results.csv must then have 3 rows
   - val.py --half (not on CPU: fp16 is GPU only) must print AP_S
   - detect.py --half (not on CPU) on the demo video: the output video has as many frames as the input
   - export.py --include onnx with its ONNX parity check (plus an --half export on CUDA)
3. Speed: benchmarks/bench_gpu.py --device D [--quick] --out OUT/bench_gpu.json, its tables included.
4. Environment: GPU name, driver, torch, CUDA, python, date.

Results: OUT/gpu_check.md (markdown tables) and OUT/gpu_check.json, rewritten after every check.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
REL_TOL = 1e-3  # model outputs: max|diff| <= REL_TOL * max(1, max|reference|)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="0", help="CUDA index ('0'), 'cuda', 'cuda:i', or 'cpu' (checks the script)")
    p.add_argument("--quick", action="store_true", help="tiny data, 64 px, few repeats: a smoke test of this script")
    p.add_argument("--out", type=Path, default=Path("runs/gpu_check"), help="output folder (default runs/gpu_check)")
    p.add_argument("--skip", nargs="+", default=[], choices=["correctness", "e2e", "speed"], help="parts to leave out")
    args = p.parse_args(argv)
    d = args.device.strip().lower()
    if d == "cpu":
        args.torch_device, args.script_device = "cpu", "cpu"
    else:
        idx = d.split(":", 1)[1] if d.startswith("cuda:") else ("0" if d == "cuda" else d)
        if not idx.isdigit():
            p.error(f"--device must be 'cpu', 'cuda', 'cuda:i' or an index, got {args.device!r}")
        args.torch_device, args.script_device = f"cuda:{idx}", idx
    args.cuda = args.torch_device != "cpu"
    return args


class Recorder:
    """Collects check results and rewrites OUT/gpu_check.{json,md} after each one."""

    def __init__(self, out: Path, args):
        self.out, self.args = out, args
        self.checks: list[dict] = []
        self.env: dict = {}
        self.bench: dict = {}
        self.bench_md = ""
        self.start = time.time()

    def run(self, section: str, name: str, fn, *a, **kw):
        print(f"[{section}] {name} ...", flush=True)
        t0 = time.perf_counter()
        row = {"section": section, "check": name, "status": "pass", "measured": "", "tolerance": "", "detail": ""}
        try:
            res = fn(*a, **kw) or {}
            row.update({k: v for k, v in res.items() if k in row})
        except Skip as e:
            row.update(status="skip", detail=str(e))
        except Exception as e:  # noqa: BLE001  (any failure of a check is recorded and the next check runs)
            row.update(status="fail", detail=f"{type(e).__name__}: {e}")
            (self.out / "logs").mkdir(parents=True, exist_ok=True)
            with open(self.out / "logs" / "tracebacks.txt", "a") as f:
                f.write(f"=== {section} / {name}\n{traceback.format_exc()}\n")
        row["seconds"] = round(time.perf_counter() - t0, 1)
        self.checks.append(row)
        print(f"[{section}] {name}: {row['status'].upper()} {row['measured']} {row['detail']}".rstrip(), flush=True)
        self.write()
        return row

    def failed(self) -> list[dict]:
        return [c for c in self.checks if c["status"] == "fail"]

    def write(self):
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"args": {"device": self.args.device, "quick": self.args.quick}, "environment": self.env,
                "checks": self.checks, "bench_gpu": self.bench, "failed": len(self.failed()),
                "total_seconds": round(time.time() - self.start, 1)}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
        lines = ["# SPD-YOLO GPU check", "", "## Environment", "", "| key | value |", "|---|---|"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in self.env.items()]
        lines += ["", (f"Mode: device `{self.args.device}`{' --quick' if self.args.quick else ''}; "
                      f"{len(self.failed())} failed of {len(self.checks)} checks; "
                      f"{data['total_seconds']} s so far."), ""]
        for section in dict.fromkeys(c["section"] for c in self.checks):
            lines += [f"## {section}", "", "| check | status | measured | tolerance | detail | s |",
                      "|---|---|---|---|---|---:|"]
            lines += [f"| {_cell(c['check'])} | {c['status'].upper()} | {_cell(c['measured'])} | "
                      f"{_cell(c['tolerance'])} | {_cell(c['detail'])} | {c['seconds']} |"
                      for c in self.checks if c["section"] == section]
            lines.append("")
        if self.bench_md:
            lines += ["## bench_gpu.py output", "", self.bench_md.strip(), ""]
        (self.out / "gpu_check.md").write_text("\n".join(lines) + "\n")


class Skip(Exception):
    pass


def _cell(v) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")[:400]


# ---------------------------------------------------------------------------------------------------------------------
# 4. Environment.


def environment(args) -> dict:
    import torch

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "cuda (torch build)": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if args.cuda else None,
           "device": args.torch_device}
    if args.cuda:
        env["gpu"] = torch.cuda.get_device_name(args.torch_device)
    if shutil.which("nvidia-smi"):
        try:
            r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30, check=False)
            env["nvidia-smi (name, driver)"] = r.stdout.strip().replace("\n", "; ") or r.stderr.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["nvidia-smi (name, driver)"] = f"error: {e}"
    else:
        env["nvidia-smi (name, driver)"] = "not available"
    try:
        import ultralytics

        env["ultralytics"] = ultralytics.__version__
    except ImportError as e:
        env["ultralytics"] = f"error: {e}"
    return env


# ---------------------------------------------------------------------------------------------------------------------
# 1. Correctness.


def check_spd_layer(dev: str, dtype_name: str):
    import torch

    from spd_yolo.layers.space_to_depth import SpaceToDepth

    dtype = getattr(torch, dtype_name)
    layer = SpaceToDepth(2)
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 16, 64, 64), (1, 3, 256, 320), (4, 32, 30, 18)]
    for shape in shapes:
        x_cpu = torch.randn(shape, generator=g).to(dtype).requires_grad_(True)
        gy = torch.randn((shape[0], shape[1] * 4, shape[2] // 2, shape[3] // 2), generator=g).to(dtype)
        y_cpu = layer(x_cpu)
        y_cpu.backward(gy)
        x_dev = x_cpu.detach().to(dev).requires_grad_(True)
        y_dev = layer(x_dev)
        y_dev.backward(gy.to(dev))
        if y_dev.dtype != dtype:
            raise AssertionError(f"output dtype {y_dev.dtype} != {dtype}")
        if not torch.equal(y_dev.cpu(), y_cpu.detach()):
            raise AssertionError(f"forward differs for shape {shape}")
        if not torch.equal(x_dev.grad.cpu(), x_cpu.grad):
            raise AssertionError(f"input gradient differs for shape {shape}")
        # channels_last input too
        y_cl = layer(x_cpu.detach().to(dev).contiguous(memory_format=torch.channels_last))
        if not torch.equal(y_cl.cpu(), y_cpu.detach()):
            raise AssertionError(f"channels_last forward differs for shape {shape}")
    return {"measured": f"{len(shapes)} shapes: forward, grad, channels_last identical",
            "tolerance": "exact (torch.equal)"}


def _first_tensor(y):
    import torch

    while isinstance(y, (list, tuple)):
        y = y[0]
    assert isinstance(y, torch.Tensor), type(y)
    return y


def _build(name: str):
    import torch

    from spd_yolo import build_model

    torch.manual_seed(0)
    return build_model(name).eval()


def _input(size=256):
    import torch

    return torch.rand((1, 3, size, size), generator=torch.Generator().manual_seed(1))


def _compare(ref, got, label: str):
    d = (got.float().cpu() - ref.float().cpu()).abs().max().item()
    scale = max(1.0, ref.abs().max().item())
    ok = d <= REL_TOL * scale
    res = {"measured": f"max|diff| {d:.3g} (output scale {scale:.3g})", "tolerance": f"<= {REL_TOL:g} x max(1, scale) "
                                                                                  f"= {REL_TOL * scale:.3g}"}
    if not ok:
        raise AssertionError(f"{label}: {res['measured']} above tolerance {REL_TOL * scale:.3g}")
    return res


def _no_tf32():
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def check_model_device(name: str, dev: str):
    import torch

    _no_tf32()
    model, x = _build(name), _input()
    with torch.inference_mode():
        ref = _first_tensor(model(x)).clone()
        got = _first_tensor(model.to(dev)(x.to(dev)))
    res = _compare(ref, got, name)
    if dev == "cpu":
        res["detail"] = "device is cpu: compares CPU with itself (script check only)"
    return res


def check_compile(dev: str):
    import torch

    _no_tf32()
    backend = "inductor" if dev.startswith("cuda") else "aot_eager"
    model, x = _build("yolov5n-SPD").to(dev), _input().to(dev)
    with torch.inference_mode():
        ref = _first_tensor(model(x)).clone()
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        got = _first_tensor(compiled(x))
        got = _first_tensor(compiled(x))  # second call: the cached graph
    res = _compare(ref, got, "torch.compile")
    res["detail"] = f"backend={backend}"
    return res


def check_channels_last(dev: str):
    import torch

    _no_tf32()
    model, x = _build("yolov5n-SPD").to(dev), _input().to(dev)
    with torch.inference_mode():
        ref = _first_tensor(model(x)).clone()
        model_cl = model.to(memory_format=torch.channels_last)
        got = _first_tensor(model_cl(x.contiguous(memory_format=torch.channels_last)))
    res = _compare(ref, got, "channels_last")
    res["detail"] = "channels_last model + input vs contiguous"
    return res


# ---------------------------------------------------------------------------------------------------------------------
# 2. End to end.


def run_script(out: Path, log_name: str, cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """Run cmd (cwd: repo root), tee its output into OUT/logs/<log_name>.log; raise on non-zero exit."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log = out / "logs" / f"{log_name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kw, check=False)
    log.write_text(f"$ {' '.join(cmd)}\n(exit {r.returncode})\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}\n")
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {r.returncode} ({log}): {' / '.join(tail)}")
    return r


def _sigint_default():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def results_rows(csv: Path) -> int:
    if not csv.exists():
        return 0
    lines = [ln for ln in csv.read_text().splitlines() if ln.strip()]
    return max(0, len(lines) - 1)


class E2E:
    def __init__(self, args):
        self.args, self.out = args, args.out
        q = args.quick
        self.imgsz = 64 if q else 640
        self.epochs = 3
        self.batch = 4 if q else 16
        self.model = "yolov5n-SPD" if q else "yolov5s-SPD"
        self.timeout = 900 if q else 7200
        self.data_root = self.out / "data"
        self.data_yaml: Path | None = None
        self.run_dir = self.out / "train" / "run"
        self.weights: Path | None = None

    def data(self):
        from spd_yolo.data.synth import generate_demo_dataset

        if self.args.quick:
            kw = {"n_train": 16, "n_val": 8, "imgsz": 64, "video_frames": 10}
        else:
            kw = {"n_train": 240, "n_val": 60, "imgsz": 640, "video_frames": 60}
        self.data_yaml = Path(generate_demo_dataset(self.data_root, progress=False, **kw))
        return {"measured": f"{kw}", "detail": str(self.data_yaml)}

    def _need_data(self):
        if self.data_yaml is None:
            raise Skip("no demo data")

    def train_interrupt_resume(self):
        self._need_data()
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir)
        cmd = [PY, "train.py", "--cfg", self.model, "--data", str(self.data_yaml), "--epochs", str(self.epochs),
               "--img", str(self.imgsz), "--batch-size", str(self.batch), "--device", self.args.script_device,
               "--project", str(self.out / "train"), "--name", "run", "--exist-ok", "--noplots",
               "--workers", "0" if self.args.quick else "4"]
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        with open(self.out / "logs" / "train_1_interrupted.log", "w") as log:  # closed also if Popen fails
            log.write(f"$ {' '.join(cmd)}\n")
            log.flush()
            last, csv = self.run_dir / "weights" / "last.pt", self.run_dir / "results.csv"
            # the child takes Ctrl-C's default action even where this script was started with SIGINT ignored
            child = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=_sigint_default,  # noqa: PLW1509  (one signal() call, no locks)
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
            deadline = time.time() + self.timeout
            try:
                while (time.time() < deadline and child.poll() is None
                       and not (last.exists() and results_rows(csv) >= 1)):
                    time.sleep(0.2)
                if child.poll() is not None:
                    raise RuntimeError(f"train.py exited ({child.returncode}) before it could be interrupted; "
                                       f"results.csv rows: {results_rows(csv)}")
                if not last.exists():
                    raise TimeoutError(f"no {last} within {self.timeout} s")
                child.send_signal(signal.SIGINT)
                try:
                    rc1 = child.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    child.kill()
                    rc1 = child.wait()
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        rows_at_interrupt = results_rows(csv)
        if rows_at_interrupt >= self.epochs:
            raise RuntimeError("training finished before the interrupt: nothing to resume")
        run_script(self.out, "train_2_resume", [PY, "train.py", "--resume", str(self.run_dir),
                                                "--device", self.args.script_device], self.timeout)
        rows = results_rows(csv)
        if rows != self.epochs:
            raise AssertionError(f"results.csv has {rows} rows after resume, expected {self.epochs}")
        best = self.run_dir / "weights" / "best.pt"
        self.weights = best if best.exists() else last
        return {"measured": f"interrupted (exit {rc1}) with {rows_at_interrupt} epoch(s) done; after --resume "
                            f"{rows} rows", "tolerance": f"{self.epochs} rows",
                "detail": f"{self.model}, img {self.imgsz}, batch {self.batch}, AMP default"}

    def _need_weights(self):
        if self.weights is None:
            raise Skip("no trained weights (training check failed)")

    def val(self):
        self._need_data()
        self._need_weights()
        cmd = [PY, "val.py", "--weights", str(self.weights), "--data", str(self.data_yaml), "--img", str(self.imgsz),
               "--device", self.args.script_device, "--project", str(self.out / "val"), "--name", "run", "--exist-ok",
               "--workers", "0"]
        half = self.args.cuda
        if half:
            cmd.append("--half")
        r = run_script(self.out, "val", cmd, self.timeout)
        text = r.stdout + r.stderr
        if "AP_S" not in text:
            raise AssertionError("'AP_S' not in val.py output")
        line = next((ln.strip() for ln in text.splitlines() if "AP_S" in ln), "")
        return {"measured": "AP_S printed", "detail": ("--half" if half else "no --half: fp16 is GPU only")
                + f"; {line[:150]}"}

    def detect(self):
        import cv2

        self._need_weights()
        video = self.data_root / "video" / "demo.avi"
        if not video.exists():
            raise Skip(f"no {video}")
        proj = self.out / "detect"
        if (proj / "run").exists():
            shutil.rmtree(proj / "run")
        cmd = [PY, "detect.py", "--weights", str(self.weights), "--source", str(video), "--img", str(self.imgsz),
               "--device", self.args.script_device, "--project", str(proj), "--name", "run", "--exist-ok"]
        half = self.args.cuda
        if half:
            cmd.append("--half")
        run_script(self.out, "detect", cmd, self.timeout)
        outs = [p for p in (proj / "run").rglob("*") if p.suffix.lower() in {".avi", ".mp4", ".mkv", ".mov"}]
        if not outs:
            raise AssertionError(f"no output video under {proj / 'run'}")

        def frames(p):
            cap = cv2.VideoCapture(str(p))
            n = 0
            while cap.read()[0]:
                n += 1
            cap.release()
            return n

        n_in, n_out = frames(video), frames(outs[0])
        if n_in != n_out or n_in == 0:
            raise AssertionError(f"output {outs[0].name} has {n_out} frames, input {n_in}")
        return {"measured": f"{n_out} frames out, {n_in} in", "tolerance": "equal",
                "detail": ("--half" if half else "no --half: fp16 is GPU only") + f"; {outs[0]}"}

    def export(self, half: bool):
        self._need_weights()
        src = self.out / "export" / ("half" if half else "fp32") / "model.pt"
        src.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.weights, src)
        cmd = [PY, "export.py", "--weights", str(src), "--include", "onnx", "--img", str(self.imgsz),
               "--device", self.args.script_device]
        if half:
            cmd.append("--half")
        r = run_script(self.out, "export_half" if half else "export", cmd, self.timeout)
        onnx = src.with_suffix(".onnx")
        if not onnx.exists():
            raise AssertionError(f"no {onnx}")
        text = r.stdout + r.stderr
        line = next((ln.strip() for ln in reversed(text.splitlines()) if "parity" in ln.lower()), "")
        return {"measured": line[:200] or "exit 0", "tolerance": "export.py --parity-tol (default 1e-3)",
                "detail": str(onnx)}


# ---------------------------------------------------------------------------------------------------------------------
# 3. Speed.


def bench(rec: Recorder, args):
    out_json = args.out / "bench_gpu.json"
    cmd = [PY, "benchmarks/bench_gpu.py", "--device", "cpu" if not args.cuda else args.torch_device,
           "--out", str(out_json)]
    if args.quick:
        cmd.append("--quick")
    r = run_script(args.out, "bench_gpu", cmd, 1200 if args.quick else 7200)
    rec.bench_md = r.stdout
    if out_json.exists():
        rec.bench = json.loads(out_json.read_text())
    return {"measured": f"{len(rec.bench.get('latency', []))} latency rows, {len(rec.bench.get('train', []))} "
                        f"train rows, {len(rec.bench.get('layer', []))} layer rows", "detail": str(out_json)}


# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out = args.out.expanduser().resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    rec = Recorder(args.out, args)
    t0 = time.perf_counter()
    try:
        import torch

        if args.cuda and not torch.cuda.is_available():
            print("error: CUDA is not available here (use --device cpu --quick to check the script)", file=sys.stderr)
            return 2
        rec.env = environment(args)
    except Exception as e:  # noqa: BLE001  (the report records it; the checks still run)
        rec.env = {"error": f"{type(e).__name__}: {e}"}
    rec.write()
    dev = args.torch_device
    if "correctness" not in args.skip:
        s = "1. correctness"
        for dt in ("float32", "float16", "bfloat16"):
            rec.run(s, f"SPD layer {dt}: {dev} vs CPU", check_spd_layer, dev, dt)
        for name in ("yolov5n-SPD", "yolo11n-SPD"):
            rec.run(s, f"{name} fp32 {dev} vs CPU (1x3x256x256)", check_model_device, name, dev)
        rec.run(s, "torch.compile(yolov5n-SPD) vs eager", check_compile, dev)
        rec.run(s, "channels_last yolov5n-SPD vs contiguous", check_channels_last, dev)
    if "e2e" not in args.skip:
        s = "2. end to end"
        e = E2E(args)
        rec.run(s, "demo data", e.data)
        rec.run(s, "train.py 3 epochs, SIGINT after epoch 1, --resume", e.train_interrupt_resume)
        rec.run(s, "val.py" + (" --half" if args.cuda else ""), e.val)
        rec.run(s, "detect.py on demo video" + (" --half" if args.cuda else ""), e.detect)
        rec.run(s, "export.py --include onnx (parity)", e.export, False)
        if args.cuda:
            rec.run(s, "export.py --include onnx --half (parity)", e.export, True)
    if "speed" not in args.skip:
        rec.run("3. speed", "bench_gpu.py" + (" --quick" if args.quick else ""), bench, rec, args)
    rec.write()
    failed = rec.failed()
    print(f"\n{len(rec.checks) - len(failed)}/{len(rec.checks)} checks did not fail "
          f"({sum(c['status'] == 'skip' for c in rec.checks)} skipped), {time.perf_counter() - t0:.0f} s; "
          f"results: {args.out / 'gpu_check.md'}, {args.out / 'gpu_check.json'}", flush=True)
    for c in failed:
        print(f"FAILED: {c['section']} / {c['check']}: {c['detail']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
