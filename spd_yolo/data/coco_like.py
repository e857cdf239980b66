# SPD-YOLO, AGPL-3.0 license
"""A synthetic, COCO-sized detection set for checking and timing COCO evaluation: ground-truth records (the
``gt_from_labels`` form), crowd flags and detections made from them, deterministic for a seed.

Areas are log-normal (about 41% small / 34% medium / 24% large, as in COCO val2017); class frequencies have a long
tail. Used by ``benchmarks/bench_coco_eval.py`` (COCO scale) and the tests of the faster-coco-eval backend.
"""

from __future__ import annotations

import numpy as np

from spd_yolo.coco import gt_from_labels

IMAGE_SIZES = ((640, 480), (480, 640), (640, 427), (500, 375), (640, 512), (427, 640), (640, 360))
# ln(area): P(area < 32^2) ~ 0.41, P(area > 96^2) ~ 0.24 (COCO val2017: 41% small, 34% medium, 24% large)
LOG_AREA_MEAN, LOG_AREA_STD = 7.47, 2.36


def make_data(n_images: int, seed: int = 0, crowd: float = 0.0, n_classes: int = 80, boxes_per_image: float = 7.3,
              fp_per_image: int = 80, max_det: int = 300) -> tuple[list[dict], list[int], list[dict]]:
    """(records for `gt_from_labels`, crowd flag per annotation in order, detections): deterministic for a seed.

    Image ids are 1..n_images and category ids 1..n_classes, as `gt_from_labels` assigns them. Detections: each
    non-crowd box is found with probability 0.85 (jittered by ~10% of its size; class wrong with probability 0.05,
    score ~U(0.3, 1)), plus U{0..fp_per_image} random boxes (score ~U(0, 0.6)); at most max_det per image (best kept).
    """
    rng = np.random.default_rng(seed)
    freq = 1.0 / np.arange(1, n_classes + 1) ** 0.8  # a long tail of class frequencies, like COCO's
    freq /= freq.sum()
    records, crowd_flags, detections = [], [], []
    for image_id in range(1, n_images + 1):
        width, height = IMAGE_SIZES[rng.integers(len(IMAGE_SIZES))]
        n = int(rng.poisson(boxes_per_image))
        area = np.exp(rng.normal(LOG_AREA_MEAN, LOG_AREA_STD, n)).clip(4.0, 0.9 * width * height)
        aspect = np.exp(rng.normal(0.0, 0.5, n))  # w / h
        w = np.minimum(np.sqrt(area * aspect), width * 0.98)
        h = np.minimum(area / w, height * 0.98)
        x = rng.uniform(0, 1, n) * (width - w)
        y = rng.uniform(0, 1, n) * (height - h)
        cls = rng.choice(n_classes, n, p=freq)
        is_crowd = rng.uniform(size=n) < crowd
        records.append({
            "file_name": f"{image_id:012d}.jpg", "height": height, "width": width, "cls": cls,
            "bboxes": np.stack([(x + w / 2) / width, (y + h / 2) / height, w / width, h / height], 1),
        })
        crowd_flags += [int(c) for c in is_crowd]
        # true positives (some missed, some with the wrong class)
        found = ~is_crowd & (rng.uniform(size=n) < 0.85)
        k = int(found.sum())
        jitter = rng.normal(0, 0.1, (k, 4)) * np.stack([w[found], h[found], w[found], h[found]], 1)
        dx, dy = x[found] + jitter[:, 0], y[found] + jitter[:, 1]
        dw, dh = np.maximum(w[found] + jitter[:, 2], 1.0), np.maximum(h[found] + jitter[:, 3], 1.0)
        dcls = np.where(rng.uniform(size=k) < 0.05, rng.integers(0, n_classes, k), cls[found])
        dscore = rng.uniform(0.3, 1.0, k)
        # false positives
        m = int(rng.integers(0, fp_per_image + 1))
        fw = np.exp(rng.normal(3.5, 1.0, m)).clip(2, width)
        fh = np.exp(rng.normal(3.5, 1.0, m)).clip(2, height)
        fx, fy = rng.uniform(0, 1, m) * (width - fw), rng.uniform(0, 1, m) * (height - fh)
        boxes = np.concatenate([np.stack([dx, dy, dw, dh], 1), np.stack([fx, fy, fw, fh], 1)])
        classes = np.concatenate([dcls, rng.choice(n_classes, m, p=freq)])
        scores = np.concatenate([dscore, rng.uniform(0.0, 0.6, m)])
        keep = np.argsort(-scores, kind="stable")[:max_det]
        detections += [
            {"image_id": image_id, "category_id": int(classes[i]) + 1, "bbox": [float(v) for v in boxes[i]],
             "score": float(scores[i])}
            for i in keep
        ]
    return records, crowd_flags, detections


def build_gt(records: list[dict], crowd_flags: list[int], n_classes: int = 80) -> dict:
    """The COCO ground truth of `make_data`'s records, by `spd_yolo.coco.gt_from_labels`, with the crowd flags set."""
    gt = gt_from_labels(records, {c: f"class{c}" for c in range(n_classes)})
    for ann, flag in zip(gt["annotations"], crowd_flags):
        ann["iscrowd"] = flag
    gt["info"] = {"description": "synthetic COCO-sized ground truth"}
    return gt
