# SPD-YOLO, AGPL-3.0 license
"""Sliced inference (SAHI) for SPD-YOLO detectors: tiny objects in large frames.

Each frame is cut into overlapping slices (sahi's ``slice_image``), every slice is run through the detector at the
model's inference size, the boxes are shifted back into the frame and merged (sahi's ``get_sliced_prediction``, with
its batching and its GREEDYNMM / NMM / NMS / LSNMS postprocess over IOU or IOS matches). sahi gets the model already
loaded (`spd_yolo.YOLO`: a .pt checkpoint or an exported model such as .onnx), so loading errors stay ours.

- `SliceSettings`: slice size, overlap, merge, optional full-frame pass, slices per forward pass.
- `SlicedDetector`: a loaded detector plus settings; ``detector(frame_bgr)`` -> boxes in frame pixels.
- `SlicedPredictor`: ultralytics' detection predictor with the sliced detector in place of the plain forward pass,
  so sources, run folders, annotated images and videos, ``save_txt`` labels and crops are exactly those of a plain
  ``predict`` (detect.py --slice).
- `sliced_coco_eval`: sliced inference over a dataset split and the COCO metrics of `spd_yolo.coco`, against the
  same ground truth as the validator (val.py --slice).

Examples:
    >>> from spd_yolo import YOLO
    >>> detector = SlicedDetector(YOLO("best.pt"), SliceSettings(size=(640, 640), overlap=0.2), imgsz=640)
    >>> boxes, n_slices = detector(cv2.imread("large.jpg"))  # (n, 6): x1, y1, x2, y2, conf, class in image pixels
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from sahi.models.ultralytics import UltralyticsDetectionModel
from sahi.predict import LOW_MODEL_CONFIDENCE, POSTPROCESS_NAME_TO_CLASS, get_sliced_prediction
from ultralytics.cfg import get_cfg
from ultralytics.data import build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
from ultralytics.engine.results import Results
from ultralytics.models.yolo.detect import DetectionPredictor
from ultralytics.utils import LOGGER, TQDM
from ultralytics.utils.patches import imread
from ultralytics.utils.torch_utils import select_device

from spd_yolo import coco
from spd_yolo.atomic import atomic_write

__all__ = (
    "MATCH_METRICS",
    "MERGE_TYPES",
    "SliceSettings",
    "SlicedDetector",
    "SlicedPredictor",
    "sliced_coco_eval",
)

MERGE_TYPES = tuple(POSTPROCESS_NAME_TO_CLASS)  # sahi's postprocess types: GREEDYNMM, NMM, NMS, LSNMS
MATCH_METRICS = ("IOU", "IOS")  # intersection over union / over the smaller box


@dataclass(frozen=True)
class SliceSettings:
    """How frames are sliced and the slices' boxes merged.

    Args:
        size: (height, width) of a slice in pixels; None: the model's inference size (each slice at full resolution).
        overlap: fraction of a slice shared with its neighbour, on both axes, in [0, 1).
        merge: sahi postprocess type (`MERGE_TYPES`), case-insensitive.
        metric: match metric (`MATCH_METRICS`).
        threshold: boxes whose match metric exceeds it are merged / suppressed, in (0, 1].
        keep_merge: keep `merge` at any confidence threshold. Otherwise sahi's rule applies: under a confidence
            threshold of 0.1 (e.g. for validation) the merge becomes NMS over IOU, as merging many low-score boxes
            would inflate them.
        full_frame: also run the whole frame at the inference size and merge its boxes (large objects; sahi's
            ``perform_standard_pred``). Skipped where the frame is a single slice.
        batch: slices per forward pass.
    """

    size: tuple[int, int] | None = None
    overlap: float = 0.2
    merge: str = "GREEDYNMM"
    metric: str = "IOS"
    threshold: float = 0.5
    keep_merge: bool = False
    full_frame: bool = False
    batch: int = 4

    def __post_init__(self):
        if self.size is not None:
            size = tuple(int(v) for v in self.size)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"slice size must be two positive integers (height, width), got {self.size}")
            object.__setattr__(self, "size", size)
        if not 0 <= self.overlap < 1:
            raise ValueError(f"slice overlap must be in [0, 1), got {self.overlap}")
        object.__setattr__(self, "merge", self.merge.upper())
        object.__setattr__(self, "metric", self.metric.upper())
        if self.merge not in MERGE_TYPES:
            raise ValueError(f"unknown merge {self.merge!r}: expected one of {', '.join(MERGE_TYPES)}")
        if self.metric not in MATCH_METRICS:
            raise ValueError(f"unknown match metric {self.metric!r}: expected {' or '.join(MATCH_METRICS)}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"merge threshold must be in (0, 1], got {self.threshold}")
        if self.merge == "LSNMS":
            if self.metric != "IOU":
                raise ValueError("LSNMS matches by IOU only")
            if importlib.util.find_spec("lsnms") is None:
                raise ValueError("LSNMS needs the lsnms package: pip install 'lsnms>0.3.1'")
        if self.batch < 1:
            raise ValueError(f"slices per batch must be >= 1, got {self.batch}")


class _LoadedUltralyticsModel(UltralyticsDetectionModel):
    """sahi's Ultralytics wrapper with the device chosen by ultralytics' rules: sahi's own `set_device` rewrites
    CUDA_VISIBLE_DEVICES for the whole process and takes '' (auto) for the CPU."""

    def set_device(self, device: str | torch.device | None = None) -> None:
        self.device = select_device("" if device is None else device, verbose=False)


class SlicedDetector:
    """A loaded ultralytics detector run slice by slice through sahi.

    Args:
        model: a loaded `spd_yolo.YOLO` / ultralytics YOLO detection model (.pt or an export such as .onnx).
        settings: `SliceSettings`.
        imgsz: inference size of each slice (int or (h, w)).
        conf: confidence threshold (per slice, and so of the merged boxes).
        iou: NMS IoU threshold within a slice.
        max_det: most boxes per slice and per merged frame (the highest scores are kept).
        classes: keep only these class ids (None: all).
        agnostic_nms: class-agnostic NMS within slices and class-agnostic merging.
        device: ultralytics device string ('' auto, 'cpu', '0', ...).
        half: FP16 inference.
        note: called with each note for the user (merge changed for a low threshold, a slice not smaller than the
            frame); default: logged as a warning.

    Calling it on a BGR frame returns (boxes, n_slices): boxes (n, 6) float32 [x1, y1, x2, y2, conf, class] in frame
    pixels, highest confidence first.
    """

    def __init__(self, model, settings: SliceSettings, imgsz: int | tuple[int, int] | list[int] = 640,
                 conf: float = 0.25, iou: float = 0.7, max_det: int = 300, classes: list[int] | None = None,
                 agnostic_nms: bool = False, device: str = "", half: bool = False,
                 note: Callable[[str], None] | None = None):
        if model.task != "detect":
            raise ValueError(f"sliced inference needs a detection model, not a '{model.task}' model")
        self.model, self.settings, self.max_det, self.agnostic = model, settings, int(max_det), bool(agnostic_nms)
        self.imgsz = (int(imgsz), int(imgsz)) if isinstance(imgsz, (int, np.integer)) else tuple(map(int, imgsz))
        self.size = settings.size or self.imgsz
        self.note = note or LOGGER.warning
        self._noted: set = set()
        self.merge, self.metric = settings.merge, settings.metric
        if not settings.keep_merge and conf < LOW_MODEL_CONFIDENCE and self.merge != "NMS":
            self.merge, self.metric = "NMS", "IOU"  # sahi's rule, applied once here instead of warning on each frame
            self.note(f"confidence threshold {conf:g} < {LOW_MODEL_CONFIDENCE}: slices merged by NMS over IOU "
                      f"(merging many low-score boxes inflates them; give the merge explicitly to keep "
                      f"{settings.merge} {settings.metric})")
        # settings sahi does not pass itself reach every forward pass through the model's own overrides
        model.overrides.update(iou=iou, max_det=int(max_det), classes=classes, agnostic_nms=bool(agnostic_nms))
        if half:
            model.overrides["quantize"] = 16
        self.device = select_device(device, verbose=False)
        if not isinstance(model.model, torch.nn.Module):
            # an export (e.g. .onnx): open it once for all slices. Without a predictor, ultralytics opens the file
            # again on every read of model.names (sahi reads it three times)
            model.predict(np.zeros((32, 32, 3), np.uint8), imgsz=self.imgsz, conf=conf, device=self.device,
                          verbose=False)
        self.sahi = _LoadedUltralyticsModel(model=model, confidence_threshold=conf, device=self.device,
                                            image_size=self.imgsz[0] if self.imgsz[0] == self.imgsz[1] else self.imgsz)
        self.names = dict(model.names)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Sliced detection on one BGR frame: (boxes (n, 6) [x1, y1, x2, y2, conf, class] in frame pixels, slices)."""
        h, w = image.shape[:2]
        if (h, w) not in self._noted:
            self._noted.add((h, w))
            if self.size[0] >= h and self.size[1] >= w:
                self.note(f"slice {self.size[1]}x{self.size[0]} is not smaller than the {w}x{h} image: one slice, "
                          f"the whole image")
        total = []
        s = self.settings
        result = get_sliced_prediction(
            np.ascontiguousarray(image[..., ::-1]),  # sahi takes RGB
            self.sahi,
            slice_height=self.size[0],
            slice_width=self.size[1],
            overlap_height_ratio=s.overlap,
            overlap_width_ratio=s.overlap,
            perform_standard_pred=s.full_frame,
            postprocess_type=self.merge,
            postprocess_match_metric=self.metric,
            postprocess_match_threshold=s.threshold,
            postprocess_class_agnostic=self.agnostic,
            verbose=0,
            batch_size=s.batch,
            force_postprocess_type=True,
            progress_callback=lambda done, n: total.append(n),
        )
        preds = result.object_prediction_list
        boxes = np.array([[*p.bbox.to_xyxy(), p.score.value, p.category.id] for p in preds], np.float32).reshape(-1, 6)
        boxes = boxes[np.argsort(-boxes[:, 4], kind="stable")][: self.max_det]
        return boxes, (total[-1] if total else 0)


class SlicedPredictor(DetectionPredictor):
    """ultralytics' detection predictor with `SlicedDetector` in place of the forward pass and NMS.

    Everything else is the stock predictor's: sources (images, folders, globs, videos, lists, streams), the run
    folder, annotated images and videos (fps and frame count kept), ``save_txt`` labels normalised to the original
    frame, crops. With ``progress``, a bar counts images/frames and shows the slices per frame.

    Examples:
        >>> predictor = SlicedPredictor(detector, overrides={"save": True, "project": "runs/detect", "name": "exp"})
        >>> for result in predictor.stream("video.mp4", model.model):
        ...     print(len(result.boxes))
    """

    def __init__(self, detector: SlicedDetector, overrides: dict | None = None, progress: bool = True,
                 _callbacks=None):
        base = {**detector.model.overrides, "mode": "predict", "batch": 1, "verbose": False}
        super().__init__(overrides={**base, **(overrides or {})}, _callbacks=_callbacks)
        self.detector, self.progress = detector, progress
        self.bar: TQDM | None = None
        self.n_frames: int | None = None  # frames the source holds (None: a stream)

    def setup_source(self, source, stride: int | None = None):
        """The stock source, and a progress bar sized by its images and video frames."""
        super().setup_source(source, stride)
        files, videos = getattr(self.dataset, "files", None), getattr(self.dataset, "video_flag", None)
        if files is not None and videos is not None:
            stride = max(1, self.args.vid_stride)
            self.n_frames = sum(_frame_count(f) // stride if v else 1 for f, v in zip(files, videos))
        if self.progress:
            self.bar = TQDM(total=self.n_frames, desc="Sliced inference", unit="frame")

    def inference(self, im, *args, **kwargs):
        """Nothing: the frames are sliced and run in `postprocess`, at full resolution."""
        return

    def postprocess(self, preds, img, orig_imgs):
        """Sliced detection on each original frame of the batch."""
        results = []
        for orig, path in zip(orig_imgs, self.batch[0]):
            boxes, n_slices = self.detector(orig)
            results.append(Results(orig, path=path, names=self.detector.names, boxes=torch.from_numpy(boxes)))
            if self.bar is not None:
                self.bar.set_postfix(slices=n_slices, objects=len(boxes))
                self.bar.update()
                if self.n_frames is not None and self.bar.n >= self.n_frames:
                    self.bar.close()  # before the stock "Results saved to" line
        return results

    def stream(self, source, model) -> Iterator[Results]:
        """Run on `source` with `model` (the loaded YOLO's ``.model``), one Results per image/frame."""
        try:
            yield from self(source=source, model=model, stream=True)
        finally:
            if self.bar is not None:
                self.bar.close()


def _frame_count(path: str) -> int:
    """Frames of a video as its header states (as ultralytics' loader counts them)."""
    cap = cv2.VideoCapture(path)
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


# ---------------------------------------------------------------------------------------------------------------------
# Validation: sliced predictions against the validator's ground truth.


def _val_dataset(data: dict, split: str, imgsz: int, single_cls: bool):
    """The split's images and verified labels, built as the detection validator builds them."""
    cfg = get_cfg(overrides={"task": "detect", "mode": "val", "imgsz": imgsz, "single_cls": single_cls, "rect": False})
    return build_yolo_dataset(cfg, data[split], batch=1, data=data, mode="val", stride=32)


def sliced_coco_eval(detector: SlicedDetector, data: str | Path, save_dir: str | Path, split: str = "val",
                     anno_json: str | Path | None = None, single_cls: bool = False, save_txt: bool = False,
                     save_conf: bool = False, progress: bool = True) -> coco.CocoStats:
    """Sliced inference on every image of a dataset split, evaluated with pycocotools (`spd_yolo.coco`).

    The images and labels are the detection validator's (ultralytics' verified dataset), and so is the ground truth:
    the official COCO annotation file (`anno_json`, or the one the dataset ships) if any, else the YOLO labels at
    original image sizes. Writes to `save_dir`: predictions.json (COCO results in original pixels, with file_name),
    coco_metrics.json and coco_metrics.csv, and with `save_txt` labels/<image>.txt (YOLO format, normalised).

    Returns:
        CocoStats (the 12 numbers, the ground truth used, pycocotools' summary).
    """
    data = check_det_dataset(str(data), autodownload=False)
    dataset = _val_dataset(data, split, max(detector.imgsz), single_cls)
    truth = coco.split_ground_truth(dataset.labels, detector.names, data["path"], anno_json)  # as the validator's
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    dets = []
    bar = TQDM(dataset.im_files, desc="Sliced validation", unit="image", disable=None if progress else True)
    for f in bar:
        if f not in truth.image_ids:
            continue
        im = imread(f)
        boxes, n_slices = detector(im)
        if single_cls:
            boxes[:, 5] = 0
        bar.set_postfix(slices=n_slices, objects=len(boxes))
        for x1, y1, x2, y2, score, c in boxes.tolist():
            dets.append({
                "image_id": truth.image_ids[f], "file_name": Path(f).name, "category_id": truth.categories[int(c)],
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)], "score": round(score, 5),
            })
        if save_txt:
            labels = save_dir / "labels" / f"{Path(f).stem}.txt"
            labels.parent.mkdir(exist_ok=True)
            labels.unlink(missing_ok=True)
            Results(im, path=f, names=detector.names, boxes=torch.from_numpy(boxes)).save_txt(labels, save_conf)
    atomic_write(save_dir / "predictions.json", json.dumps(dets))
    result = coco.evaluate(truth.source, [{k: v for k, v in d.items() if k != "file_name"} for d in dets],
                           image_ids=truth.evaluated, progress=progress)
    coco.save_stats(result, save_dir)
    return result

