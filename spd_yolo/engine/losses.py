# SPD-YOLO, AGPL-3.0 license
"""Label smoothing: the detector's class BCE (YOLOv5-style targets) and the classifier's cross-entropy."""

from __future__ import annotations

import torch
from torch import nn
from ultralytics.nn.tasks import ClassificationModel
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model


class SmoothBCEWithLogits(nn.BCEWithLogitsLoss):
    """BCE-with-logits on YOLOv5-style smoothed targets: t * (1 - eps) + eps / 2."""

    def __init__(self, eps: float, reduction: str = "none"):
        super().__init__(reduction=reduction)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(pred, target * (1.0 - self.eps) + 0.5 * self.eps)


def label_smoothing(eps: float):
    """Training callback (``on_pretrain_routine_end``) that smooths the classification targets of the loss by eps:
    a detector's class BCE gets YOLOv5-style targets (`SmoothBCEWithLogits`), a classifier's cross-entropy smoothed
    targets (`SmoothCrossEntropy`)."""
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {eps}")

    def apply(trainer) -> None:
        model = unwrap_model(trainer.model)
        if isinstance(model, ClassificationModel):
            model.criterion = SmoothCrossEntropy(eps)
            LOGGER.info(f"label smoothing: cross-entropy targets smoothed by eps={eps}")
            return
        model.criterion = model.init_criterion()
        model.criterion.bce = SmoothBCEWithLogits(eps)
        LOGGER.info(f"label smoothing: classification targets smoothed by eps={eps}")

    return apply




class SmoothCrossEntropy:
    """The stock classification loss (mean cross-entropy on the logits) with label smoothing eps."""

    def __init__(self, eps: float):
        self.eps = float(eps)

    def __call__(self, preds, batch: dict) -> tuple:
        preds = preds[1] if isinstance(preds, (list, tuple)) else preds
        loss = nn.functional.cross_entropy(preds, batch["cls"], reduction="mean", label_smoothing=self.eps)
        return loss, {"loss": loss.detach()}
