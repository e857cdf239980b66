# SPD-YOLO, AGPL-3.0 license
"""ultralytics engine classes with SPD-YOLO additions, found at the fewest extension points.

- `SPDDetectionTrainer` (`detection.py`): the stock trainer, defined in our package (ultralytics' multi-GPU (DDP)
  workers rebuild the trainer from its class, so importing it there registers the SPD layers before any YAML is
  parsed), with atomic checkpoint writes, a clean results.csv on resume, and a weights-only copy of best.pt
  (`fault_tolerance.py`); optionally with per-epoch COCO metrics and best.pt chosen by COCO AP or AP_S
  (`SPDDetectionTrainer.configured`; the choices and checkpoint records in `fitness.py`).
- `SPDDetectionValidator` (`detection.py`): the stock validator whose `eval_json` (run when ``save_json=True``)
  computes the COCO metrics with pycocotools for any YOLO-format dataset (or against an official COCO annotation
  file), prints the table and saves it as JSON and CSV in the run folder. During training it can also add COCO AP,
  AP_S, AP_M and AP_L to every epoch's metrics (results.csv, results.png) and select best.pt by one.
- `label_smoothing(eps)` (`losses.py`): a training callback smoothing the classification targets: YOLOv5-style for a
  detector's class BCE, smoothed cross-entropy for a classifier.
- `SPDClassificationTrainer` / `SPDClassificationValidator` (`classification.py`): the same for image
  classification (the ResNet models): fault tolerant the same way, image-folder datasets checked before ultralytics
  sees them (never a download), and a validator that adds per-class top-1/top-5 accuracy (``verbose``).
"""

from spd_yolo.engine.classification import SPDClassificationTrainer, SPDClassificationValidator
from spd_yolo.engine.detection import SPDDetectionTrainer, SPDDetectionValidator
from spd_yolo.engine.fault_tolerance import FaultTolerantTrainer
from spd_yolo.engine.fitness import (
    COCO_COLUMNS,
    COCO_TIME_COLUMN,
    FINETUNE_KEY,
    FITNESS,
    FITNESS_KEY,
    checkpoint_record,
)
from spd_yolo.engine.losses import SmoothBCEWithLogits, SmoothCrossEntropy, label_smoothing

__all__ = (
    "COCO_COLUMNS",
    "COCO_TIME_COLUMN",
    "FINETUNE_KEY",
    "FITNESS",
    "FITNESS_KEY",
    "FaultTolerantTrainer",
    "SPDClassificationTrainer",
    "SPDClassificationValidator",
    "SPDDetectionTrainer",
    "SPDDetectionValidator",
    "SmoothBCEWithLogits",
    "SmoothCrossEntropy",
    "checkpoint_record",
    "label_smoothing",
)
