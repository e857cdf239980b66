# SPD-YOLO, AGPL-3.0 license
"""Image classification (ResNet18/50 and their SPD versions): fault-tolerant trainer, per-class accuracy."""

from __future__ import annotations

from copy import copy

import torch
from ultralytics.models.yolo.classify import ClassificationTrainer, ClassificationValidator
from ultralytics.utils import LOGGER

from spd_yolo.data.folders import check_classification_folders
from spd_yolo.engine.fault_tolerance import FaultTolerantTrainer


class SPDClassificationValidator(ClassificationValidator):
    """ClassificationValidator that also reports per-class accuracy.

    Top-1 and top-5 accuracy over all images are the stock ones; the confusion matrix is plotted when ``plots`` is
    set (confusion_matrix.png and confusion_matrix_normalized.png in the run folder). With ``verbose`` (outside
    training) a table of images, top-1 and top-5 accuracy per class follows, and ``metrics.class_accuracy`` maps each
    class name to ``(images, top1, top5)`` in any case.
    """

    def finalize_metrics(self) -> None:
        """Stock metrics, then per-class accuracy from the top-5 predictions."""
        super().finalize_metrics()
        self.metrics.class_accuracy = self.class_accuracy()

    def class_accuracy(self) -> dict[str, tuple[int, float, float]]:
        """{class name: (number of images, top-1 accuracy, top-5 accuracy)} for the classes that have images."""
        if not self.pred:
            return {}
        pred, targets = torch.cat(self.pred), torch.cat(self.targets)
        result = {}
        for c, name in self.names.items():
            mask = targets == c
            n = int(mask.sum())
            if n:
                hits = pred[mask] == c
                result[name] = (n, float(hits[:, 0].float().mean()), float(hits.any(1).float().mean()))
        return result

    def print_results(self) -> None:
        """'all' top-1/top-5 as stock; per class with verbose (not during training, as the detection validator)."""
        super().print_results()
        if self.args.verbose and not self.training and len(self.names) > 1:
            LOGGER.info(("%22s" + "%11s" * 3) % ("class", "images", "top1_acc", "top5_acc"))
            for name, (n, top1, top5) in self.metrics.class_accuracy.items():
                LOGGER.info(("%22s" + "%11i" + "%11.3g" * 2) % (str(name)[:22], n, top1, top5))


class SPDClassificationTrainer(FaultTolerantTrainer, ClassificationTrainer):
    """ClassificationTrainer importable from `spd_yolo` (DDP workers then register the SPD layers), fault tolerant as
    `SPDDetectionTrainer`, validating with `SPDClassificationValidator`.

    The dataset (``data``: a folder with train/ and val/ or test/, one sub-folder of images per class) is checked by
    `spd_yolo.data.folders.check_classification_folders` before ultralytics sees it, so a missing folder is an error
    naming it, never a download attempt.
    """

    def get_dataset(self):
        """Check the image folders (clear errors, no download), then ultralytics' own dataset dict."""
        check_classification_folders(self.args.data, ("train", "val"))
        return super().get_dataset()

    def get_validator(self):
        """Return an SPDClassificationValidator."""
        return SPDClassificationValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )


