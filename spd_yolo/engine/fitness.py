# SPD-YOLO, AGPL-3.0 license
"""What best.pt is chosen by, and the records SPD-YOLO keeps in a training checkpoint."""

from __future__ import annotations

FITNESS = {"default": None, "ap": "AP", "ap_small": "AP_S"}
"""What best.pt maximises (`SPDDetectionTrainer.configured`): ultralytics' own fitness (mAP50-95) or a COCO stat."""
COCO_COLUMNS = {k: f"metrics/coco_{k}" for k in ("AP", "AP_S", "AP_M", "AP_L")}
"""COCO stat -> results.csv column of the per-epoch COCO metrics: pycocotools' fractions (0..1), -1 where undefined
(no ground-truth object of that size in the validation set) or not measured (an epoch without validation)."""
COCO_TIME_COLUMN = "time/coco_eval_s"
"""results.csv column: seconds the epoch's validation spent on COCO metrics (predictions to COCO form + pycocotools)."""
FINETUNE_KEY = "spd_finetune"
"""Record (`checkpoint_record`) of a run that started from an exact SPD upgrade: the fine-tuning rule it used (name,
optimizer, hold, hold_epochs; see `spd_yolo.upgrade.FINETUNE_RULES`)."""
FITNESS_KEY = "spd_fitness"
"""Record (`checkpoint_record`) of the selection: name (a FITNESS key), column (results.csv column or None for
default), coco_metrics, best_value and best_epoch (1-based, as in results.csv) of the best epoch so far; for best.pt
its own."""
AREA = {"AP": "all", "AP_S": "small", "AP_M": "medium", "AP_L": "large"}
"""COCO stat -> pycocotools area range name."""


def checkpoint_record(ckpt: dict | None, key: str) -> dict | None:
    """SPD-YOLO's record `key` (`FITNESS_KEY` or `FINETUNE_KEY`) of a loaded training checkpoint, None if it has none.

    The trainer keeps each record as an attribute of the model it saves (the EMA model: ``ckpt["ema"]`` in last.pt,
    ``ckpt["model"]`` once ultralytics stripped the optimizer), so the record also travels with the model that
    ``YOLO("best.pt").model`` loads. Checkpoints of earlier SPD-YOLO versions hold it as a top-level key of the dict
    instead; it is read there too.
    """
    if not ckpt:
        return None
    if ckpt.get(key) is not None:  # older checkpoints: a top-level key
        return ckpt[key]
    model = ckpt.get("ema") if ckpt.get("ema") is not None else ckpt.get("model")
    record = getattr(model, key, None)
    return dict(record) if isinstance(record, dict) else None
