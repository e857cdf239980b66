# SPD-YOLO, AGPL-3.0 license
"""Detection over long inputs: a 2,000-frame video and a folder of 2,000 images, run to the end with flat memory.

Runs detect.py as a user would (one fresh process per run) on 100 and on N items of each kind and reports the peak
resident memory (max RSS, from the kernel's accounting of that child process), the time, and for the video the frame
count of the annotated output. Memory is flat when the N-item peak is the 100-item peak within noise.

    .venv/bin/python benchmarks/bench_detect_load.py                 # N = 2000, 256 px, yolov5n-SPD (untrained)
    .venv/bin/python benchmarks/bench_detect_load.py --quick         # N = 200 at 64 px: a smoke test
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import base_parser, check_common, check_size, environment, environment_lines, markdown_table, write_results

REPO = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, n: int, imgsz: int) -> dict[str, Path]:
    """Deterministic moving-shapes frames: an MJPG video of n frames and a folder of n JPEGs (plus 100-item ones)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (imgsz, imgsz, 3), dtype=np.uint8), (0, 0), 5)
    inputs = {}
    for count in (100, n):
        video = folder / f"video_{count}.avi"
        images = folder / f"images_{count}"
        images.mkdir()
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (imgsz, imgsz))
        for i in range(count):
            frame = background.copy()
            for k in range(12):  # small objects drifting across the frame
                x, y = (37 * k + 3 * i) % imgsz, (53 * k + 2 * i) % imgsz
                cv2.circle(frame, (x, y), 3 + k % 5, (40 * k % 255, 200, 255 - 20 * k), -1)
            writer.write(frame)
            cv2.imwrite(str(images / f"{i:05d}.jpg"), frame)
        writer.release()
        inputs[f"video:{count}"], inputs[f"images:{count}"] = video, images
    return inputs


def run_detect(weights: Path, source: Path, imgsz: int, project: Path, name: str, threads: int) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one detect.py process."""
    cmd = [sys.executable, str(REPO / "detect.py"), "--weights", str(weights), "--source", str(source),
           "--img", str(imgsz), "--project", str(project), "--name", name, "--device", "cpu"]
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"detect.py failed on {source}:\n{proc.stderr.read()[-2000:]}")
    return usage.ru_maxrss / 1024, seconds  # Linux reports KiB


def frame_count(video: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__)
    parser.add_argument("--items", type=int, default=2000, help="frames / images of the long inputs")
    parser.add_argument("--imgsz", type=int, default=None, help="inference size, a multiple of 32 (default 256; "
                                                                "--quick 64)")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (default: an untrained yolov5n-SPD)")
    args = parser.parse_args(argv)
    check_common(parser, args)
    if args.imgsz is None:
        args.imgsz = 64 if args.quick else 256
    check_size(parser, "--imgsz", args.imgsz)
    if args.quick:
        args.items = 200
    if args.items < 100:
        parser.error(f"--items must be >= 100 (the short run has 100), got {args.items}")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: file not found")

    with tempfile.TemporaryDirectory(prefix="spd-load-") as tmp:
        tmp = Path(tmp)
        weights = args.weights
        if weights is None:
            from spd_yolo import YOLO

            weights = tmp / "yolov5n-SPD.pt"
            YOLO("yolov5n-SPD").save(weights)
        inputs = make_inputs(tmp, args.items, args.imgsz)
        rows, data = [], {"environment": environment(args.threads), "runs": []}
        for key, source in inputs.items():
            kind, count = key.split(":")
            rss, seconds = run_detect(weights, source, args.imgsz, tmp / "runs", key.replace(":", "_"), args.threads)
            out_frames = frame_count(tmp / "runs" / key.replace(":", "_") / source.name) if kind == "video" else None
            data["runs"].append({"input": kind, "items": int(count), "peak_rss_mib": rss, "seconds": seconds,
                                 "output_frames": out_frames})
            rows.append([kind, count, f"{rss:.0f}", f"{seconds:.1f}", f"{int(count) / seconds:.1f}",
                         "-" if out_frames is None else out_frames])
    table = markdown_table(["input", "items", "peak RSS (MiB)", "time (s)", "items/s", "output frames"], rows)
    by = {(r["input"], r["items"]): r["peak_rss_mib"] for r in data["runs"]}
    growth = "\n".join(
        f"{kind}: peak RSS {by[(kind, args.items)] - by[(kind, 100)]:+.0f} MiB from 100 to {args.items} items"
        for kind in ("video", "images")
    )
    text = f"{environment_lines(data['environment'])}\n\n{table}\n\n{growth}"
    print(text)
    write_results(args.out, data, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
