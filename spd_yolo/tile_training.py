# SPD-YOLO, AGPL-3.0 license
"""Training on tiles with sliced validation: ``train.py --tile 640 [--tile-overlap 0.2]``.

- `tiled_data`: the dataset of a data YAML tiled at native resolution (`spd_yolo.data.tiles`), in a cache folder
  beside the dataset, made once and reused while the settings and the source files match.
- `SlicedCocoValidator`: the detection validator whose COCO metrics (``--coco-metrics``, ``--fitness ap`` /
  ``ap_small``) come from sliced inference on the whole validation frames, through `spd_yolo.slicing`'s
  `SlicedDetector` and `sliced_coco_eval`, the code of ``val.py --slice``: best.pt is chosen by AP_S as
  ``val.py --slice`` will measure it. The stock metrics of each epoch (mAP50-95, ...) stay those of the plain
  forward pass on the whole frames at the training size.
- `SlicedTrainer`: `SPDDetectionTrainer` validating with it (``SlicedTrainer.configured(...).sliced(settings)``).

This module is the one place where tiled training touches the engine; it uses only the trainer's and validator's
public hooks (``get_validator``, ``coco_evaluate_predictions``).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from copy import copy, deepcopy
from pathlib import Path

import torch
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from spd_yolo import coco
from spd_yolo.data import tiles
from spd_yolo.data.convert import tile_yolo
from spd_yolo.engine import SPDDetectionTrainer, SPDDetectionValidator
from spd_yolo.model import YOLO
from spd_yolo.slicing import SlicedDetector, SliceSettings, sliced_coco_eval

__all__ = ("SlicedCocoValidator", "SlicedTrainer", "tile_slices", "tiled_data")

SLICED_DIR = "sliced_val"  # in the run folder: the last sliced validation's predictions.json and COCO tables


def tiled_data(data_yaml: str | Path, settings: tiles.TileSettings, progress: bool = True) -> str:
    """The data YAML of `data_yaml`'s dataset tiled with `settings` (`tiles.cache_folder`: beside the dataset), made
    if missing or stale, else reused."""
    source = tiles.read_source(data_yaml)
    dst = tiles.cache_folder(source, settings)
    found = tiles.read_marker(dst)
    if found == tiles.marker(source, settings) and (dst / "data.yaml").is_file():
        if progress:
            LOGGER.info(f"Tiles: reusing {dst} (made with the same settings from the same files)")
        return str(dst / "data.yaml")
    counts = tile_yolo(data_yaml, dst, settings, overwrite=found is not None, progress=progress)
    if progress:
        LOGGER.info(f"Tiles: {tiles.summary(counts, dst, settings)}")
    return str(dst / "data.yaml")


def tile_slices(data_yaml: str | Path) -> SliceSettings | None:
    """The slices that match a tiled dataset's tiles (size and overlap from its tiles.json), or None where the data
    YAML is not a tile set's (a resumed ``--tile`` run validates as it started)."""
    record = tiles.read_record(Path(data_yaml).parent)
    if record is None:
        return None
    s = record["settings"]
    return SliceSettings(size=tuple(s["size"]), overlap=s["overlap"])


class SlicedCocoValidator(SPDDetectionValidator):
    """SPDDetectionValidator whose COCO metrics come from sliced inference on the whole validation frames.

    During training the model is the trainer's EMA (a copy, saved as a checkpoint and loaded as ``val.py`` loads
    one); outside training (the final validation of best.pt) the checkpoint it is given. Each slice is run at the
    validator's image size, with its confidence and IoU thresholds; the merge follows `SliceSettings` (at the
    validation threshold 0.001: NMS over IOU, as ``val.py --slice``). The last evaluation's predictions.json and
    coco_metrics.json/.csv are in ``<run>/sliced_val/``.

    Args:
        slice_settings: how the frames are sliced (`SliceSettings`; size None: the image size).
    """

    def __init__(self, *args, slice_settings: SliceSettings, **kwargs):
        super().__init__(*args, **kwargs)
        self.slice_settings = slice_settings
        self._source = None  # the trainer (its EMA model) or the checkpoint being validated
        self._noted = False

    def __call__(self, trainer=None, model=None, **kwargs):
        self._source = trainer if trainer is not None else model
        return super().__call__(trainer=trainer, model=model, **kwargs)

    @contextlib.contextmanager
    def _model(self) -> Iterator[YOLO]:
        """The model under validation as a loaded YOLO: a checkpoint as it is; the trainer's EMA (or a module) saved
        to a temporary checkpoint first, so the sliced evaluation loads it as val.py loads best.pt."""
        source = self._source
        if isinstance(source, (str, Path)):
            yield YOLO(str(source))
            return
        module = source.ema.ema if getattr(source, "ema", None) else getattr(source, "model", source)
        module = deepcopy(unwrap_model(module)).float().eval()
        with tempfile.TemporaryDirectory(prefix="sliced-val-", dir=self.save_dir) as tmp:
            path = Path(tmp) / "model.pt"
            torch.save({"model": module, "train_args": {"imgsz": self.args.imgsz, "task": "detect"}}, path)
            yield YOLO(str(path))

    def _note(self, text: str) -> None:
        if not self._noted:
            LOGGER.info(f"Sliced validation: {text}")
        self._noted = True

    def coco_evaluate_predictions(self) -> coco.CocoStats:
        """COCO metrics of sliced inference on the validation split (`sliced_coco_eval`), not of the plain pass."""
        with self._model() as model:
            detector = SlicedDetector(model, self.slice_settings, imgsz=self.args.imgsz, conf=self.args.conf,
                                      iou=self.args.iou, max_det=self.args.max_det, device=self.device,
                                      note=self._note)
            h, w = detector.size
            LOGGER.info(f"Sliced validation: {w}x{h} slices (W x H), overlap {self.slice_settings.overlap:g}, merged "
                        f"by {detector.merge} {detector.metric}, inference size {self.args.imgsz}")
            return sliced_coco_eval(detector, self.args.data, Path(self.save_dir) / SLICED_DIR,
                                    split=self.args.split, anno_json=self.anno_json, single_cls=self.args.single_cls,
                                    progress=not self.training)


class SlicedTrainer(SPDDetectionTrainer):
    """SPDDetectionTrainer validating with `SlicedCocoValidator` once `sliced` has set the slices; the COCO fitness
    (``configured(fitness="ap_small")``) then selects best.pt by sliced AP_S."""

    slice_settings: SliceSettings | None = None

    @classmethod
    def sliced(cls, settings: SliceSettings) -> type[SlicedTrainer]:
        """This trainer class with sliced COCO validation by `settings` (a subclass, as `configured` makes)."""
        h, w = settings.size or (0, 0)
        name = f"{cls.__name__}[sliced {w}x{h} overlap {settings.overlap:g}]"
        return type(cls)(name, (cls,), {"slice_settings": settings, "__module__": cls.__module__})

    def get_validator(self):
        """A SlicedCocoValidator where slices are set, else the stock SPDDetectionValidator."""
        if self.slice_settings is None:
            return super().get_validator()
        validator = SlicedCocoValidator(self.test_loader, save_dir=self.save_dir, args=copy(self.args),
                                        _callbacks=self.callbacks, slice_settings=self.slice_settings)
        validator.data, validator.names = self.data, self.data["names"]
        return validator

