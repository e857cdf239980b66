# SPD-YOLO, AGPL-3.0 license
"""Fault tolerance for every ultralytics trainer: atomic checkpoints, clean resume, best.weights.pt."""

from __future__ import annotations

import os
import shutil

from ultralytics.nn.tasks import load_checkpoint
from ultralytics.utils import LOGGER, RANK

from spd_yolo.atomic import AtomicPath, atomic_write
from spd_yolo.weights import save_weights_only

STRIPPING = ".stripping.pt"  # suffix of the copies final_eval strips (a .pt: ultralytics validates best's copy)


class FaultTolerantTrainer:
    """Mixin (before a stock ultralytics trainer class) that makes training fault tolerant, for every task.

    - last.pt, best.pt and epochN.pt are written atomically (temp file + rename), also when the optimizer is stripped
      at the end: a kill at any moment leaves the previous file readable.
    - On resume, results.csv is cut back to the epochs the checkpoint holds, so an epoch that was logged but not
      checkpointed before a kill is not listed twice; temp files of a killed write are removed.
    - After training, best.weights.pt (weights only, see `spd_yolo.weights`) is written beside best.pt.
    - Under torchrun across several nodes the process group is sized by torchrun's WORLD_SIZE (ultralytics counts the
      local GPUs only, which is right for one node).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.wdir = AtomicPath(self.wdir)
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if "LOCAL_RANK" in os.environ and self.world_size > 1 and world > self.world_size:
            self.world_size = world  # every rank of every node joins one process group

    def resume_training(self, ckpt):
        """Resume as ultralytics does, then drop results.csv rows of epochs the checkpoint does not hold."""
        super().resume_training(ckpt)
        if ckpt is None or not self.resume:
            return
        for pattern in (".*.tmp", f".*{STRIPPING}"):  # temp files of a write that was killed before its rename
            for stale in self.wdir.glob(pattern):
                stale.unlink(missing_ok=True)
        if not self.csv.is_file():
            return
        lines = self.csv.read_text(encoding="utf-8").splitlines(keepends=True)
        keep = lines[:1] + [line for line in lines[1:] if float(line.split(",", 1)[0]) <= self.start_epoch]
        if len(keep) != len(lines):
            LOGGER.info(f"results.csv: dropped {len(lines) - len(keep)} row(s) logged after the resumed checkpoint")
            atomic_write(self.csv, "".join(keep))

    def final_eval(self):
        """Strip the optimizer atomically, validate best.pt, and write best.weights.pt beside it.

        ultralytics' final_eval rewrites last.pt and best.pt in place (`strip_optimizer`); it is given copies instead
        (hidden, beside them), which replace the originals by a rename once it has finished. A kill or an error
        before that leaves the originals as they were (with their optimizer)."""
        originals = self.last, self.best
        staged = {p: p.with_name(f".{p.stem}{STRIPPING}") for p in originals if p.exists() and RANK in {-1, 0}}
        for p, copy in staged.items():
            shutil.copyfile(p, copy)
        self.last, self.best = (staged.get(p, p) for p in originals)
        try:
            super().final_eval()
            for p, copy in staged.items():
                os.replace(copy, p)
        finally:
            self.last, self.best = originals
            for copy in staged.values():
                copy.unlink(missing_ok=True)
        if RANK in {-1, 0} and self.best.exists():
            model, _ = load_checkpoint(self.best)
            save_weights_only(model.half(), self.best.with_name("best.weights.pt"))  # FP16, as best.pt stores it
