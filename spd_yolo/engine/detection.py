# SPD-YOLO, AGPL-3.0 license
"""Detection: the validator with COCO metrics (pycocotools) and the trainer that can select best.pt by COCO AP/AP_S."""

from __future__ import annotations

import time
from copy import copy
from pathlib import Path

import torch.distributed as dist
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.utils import LOGGER, RANK
from ultralytics.utils.torch_utils import unwrap_model

from spd_yolo import coco
from spd_yolo.engine.fault_tolerance import FaultTolerantTrainer
from spd_yolo.engine.fitness import (
    AREA,
    COCO_COLUMNS,
    COCO_TIME_COLUMN,
    FINETUNE_KEY,
    FITNESS,
    FITNESS_KEY,
    checkpoint_record,
)
from spd_yolo.errors import FitnessError
from spd_yolo.upgrade import DEFAULT_FINETUNE, FINETUNE_RULES, RECORD_KEY, FinetuneRule, load_pretrained


class SPDDetectionValidator(DetectionValidator):
    """DetectionValidator that reports pycocotools' COCO metrics (AP_S first) for any dataset.

    During training, a trainer whose ``coco_metrics`` is set (`SPDDetectionTrainer.configured`) gets the COCO stats
    of `COCO_COLUMNS` and `COCO_TIME_COLUMN` in every validation's metrics, and its ``fitness_name`` decides the
    fitness (the stat of `FITNESS`, else ultralytics' own). The ground truth is built once per validation set.

    Args:
        anno_json (str | Path, optional): Official COCO annotation file to evaluate against. Default: the file shipped
            with the dataset (``<path>/annotations/instances_<split folder>.json``) if any, else a ground truth built
            from the YOLO labels at original image sizes.
        coco_backend (str): COCOeval implementation, one of `coco.BACKENDS`: "pycocotools" (default, the reference)
            or "faster-coco-eval" (optional package, same numbers, faster on large sets).
    """

    def __init__(self, *args, anno_json: str | Path | None = None, coco_backend: str = "pycocotools", **kwargs):
        super().__init__(*args, **kwargs)
        self.anno_json = Path(anno_json) if anno_json else None
        coco.check_backend(coco_backend)  # unknown name or package missing: fail before validating
        self.coco_backend = coco_backend
        self.coco_stats: coco.CocoStats | None = None
        self.coco_in_training = False  # set from the trainer at each training validation
        self.fitness_stat: str | None = None  # COCO stat used as fitness during training, None: ultralytics' fitness
        self._gt = None  # (dataset, its coco.SplitGroundTruth), see coco_ground_truth
        self._json_s = 0.0  # seconds spent turning predictions into COCO results this validation
        self._det_files: list[str] = []  # image file of each prediction in self.jdict

    def __call__(self, trainer=None, model=None, **kwargs):
        """Validate; with save_json, COCO metrics are computed even when the model predicted nothing at all."""
        if trainer is not None:
            self.coco_in_training = bool(getattr(trainer, "coco_metrics", False))
            self.fitness_stat = FITNESS[getattr(trainer, "fitness_name", "default")]
        stats = super().__call__(trainer=trainer, model=model, **kwargs)
        if not self.training and self.args.save_json and not self.jdict and self.coco_stats is None:
            stats = self.eval_json(stats)
        return stats

    def init_metrics(self, model) -> None:
        """Stock, and this validation's COCO detections cleared (`pred_to_json`)."""
        super().init_metrics(model)
        self.coco_stats, self._json_s, self._det_files = None, 0.0, []

    def update_metrics(self, preds, batch) -> None:
        """Stock; during a training validation with COCO metrics, each image's predictions also go to `pred_to_json`
        (ultralytics calls it itself only with ``save_json``)."""
        super().update_metrics(preds, batch)
        if self.training and self.coco_in_training and not self.args.save_json:
            t = time.perf_counter()
            for si, pred in enumerate(preds):
                predn = self._prepare_pred(pred)
                if len(predn["cls"]):
                    pbatch = self._prepare_batch(si, batch)
                    self.pred_to_json(self.scale_preds(predn, pbatch), pbatch)
            self._json_s += time.perf_counter() - t

    def pred_to_json(self, predn, pbatch) -> None:
        """Stock (one image's predictions in COCO form, appended to ``self.jdict``), each also remembered with its
        image file, timed (part of the COCO cost reported in `COCO_TIME_COLUMN`)."""
        t, n = time.perf_counter(), len(self.jdict)
        super().pred_to_json(predn, pbatch)
        self._det_files += [pbatch["im_file"]] * (len(self.jdict) - n)
        self._json_s += time.perf_counter() - t

    def gather_stats(self) -> None:
        """Stock (under DDP, rank 0 gets every rank's ``jdict`` in rank order), and the image files of the
        predictions gathered in the same order."""
        super().gather_stats()
        if RANK > -1 and self.training and self.coco_in_training:
            gathered = [None] * dist.get_world_size() if RANK == 0 else None
            dist.gather_object(self._det_files, gathered, dst=0)
            self._det_files = [f for files in gathered for f in files] if RANK == 0 else []

    def get_stats(self) -> dict:
        """Stock metrics; during training with COCO metrics, the COCO columns too (and the COCO fitness if chosen)."""
        stats = super().get_stats()
        if not (self.training and self.coco_in_training):
            return stats
        t = time.perf_counter()
        result = self.coco_evaluate_predictions()
        seconds = self._json_s + time.perf_counter() - t
        stats.update({column: result.values[k] for k, column in COCO_COLUMNS.items()})
        stats[COCO_TIME_COLUMN] = seconds
        values = "  ".join(f"{k} {'-' if result.values[k] < 0 else f'{result.values[k]:.4f}'}" for k in COCO_COLUMNS)
        LOGGER.info(
            f"COCO metrics ({self.coco_backend}): {values}  ({seconds:.2f} s; ground truth: {result.gt_source})"
        )
        if self.fitness_stat:
            stats["fitness"] = result.values[self.fitness_stat]
            if stats["fitness"] < 0:
                LOGGER.warning(f"COCO {self.fitness_stat} is undefined (-1) on this validation set: fitness is -1")
        return stats

    def eval_json(self, stats: dict) -> dict:
        """COCO evaluation of this run's predictions with pycocotools; prints, saves and returns the stats."""
        if self.training:
            return stats
        result = self.coco_evaluate_predictions()
        self.coco_stats = result
        self.metrics.coco = result  # reachable from what Model.val() returns
        json_path, csv_path = coco.save_stats(result, self.save_dir)
        head = f"COCO metrics ({self.coco_backend}), ground truth: {result.gt_source}"
        LOGGER.info(f"\n{head}\n{result.summary.rstrip()}")
        LOGGER.info(f"COCO metrics saved to {json_path} and {csv_path}")
        stats.update({f"coco/{k}": v for k, v in result.values.items()})
        return stats

    def coco_evaluate_predictions(self) -> coco.CocoStats:
        """Map this run's predictions (self.jdict) onto the ground truth and run COCOeval."""
        truth = self.coco_ground_truth()
        cls = self._class_of()
        if truth.anno is not None:  # official file: its crowd regions, areas and category ids; images matched by name
            by_name = {Path(f).name: i for f, i in truth.image_ids.items()}
            dets = [
                {**d, "image_id": by_name[d["file_name"]], "category_id": truth.categories[cls[d["category_id"]]]}
                for d in self.jdict
                if d["file_name"] in by_name
            ]
            evaluated = truth.evaluated
            return coco.evaluate(truth.source, dets, image_ids=evaluated, progress=True, backend=self.coco_backend)
        # the ground truth's image ids are dataset index + 1; `pred_to_json` kept each prediction's image file
        index = {label["im_file"]: i for i, label in enumerate(self.dataloader.dataset.labels)}
        dets = [
            {**d, "image_id": index[f] + 1, "category_id": cls[d["category_id"]] + 1}
            for d, f in zip(self.jdict, self._det_files)
        ]
        return coco.evaluate(truth.source, dets, progress=True, backend=self.coco_backend)

    def coco_ground_truth(self) -> coco.SplitGroundTruth:
        """The COCO ground truth of this validation set (`coco.split_ground_truth`), built once per dataset."""
        dataset = self.dataloader.dataset
        if self._gt is None or self._gt[0] is not dataset:
            self._gt = (dataset, coco.split_ground_truth(dataset.labels, self.names, self.data["path"], self.anno_json))
        return self._gt[1]

    def _class_of(self) -> dict[int, int]:
        """The category ids ultralytics wrote into jdict (class_map: COCO's 91 ids, else c + 1) -> class index."""
        return {cat: c for c, cat in enumerate(self.class_map)}


class SPDDetectionTrainer(FaultTolerantTrainer, DetectionTrainer):
    """DetectionTrainer importable from `spd_yolo` (so DDP workers register SPD layers), made fault tolerant by
    `FaultTolerantTrainer` (atomic checkpoints, clean resume, best.weights.pt), validating with `SPDDetectionValidator`.

    `configured` gives the trainer that also records COCO metrics each epoch and/or selects best.pt by COCO AP or
    AP_S; the checkpoints record the selection (`FITNESS_KEY`) and a resumed run continues with the one it started
    with, whatever trainer class resumes it.
    """

    fitness_name: str = "default"  # a FITNESS key: what best.pt (and early stopping) maximises
    coco_metrics: bool = False  # each epoch's validation also computes the COCO metrics (COCO_COLUMNS)
    finetune_rule: str = DEFAULT_FINETUNE  # a FINETUNE_RULES key, for training that starts from an exact SPD upgrade

    @classmethod
    def configured(cls, fitness: str = "default", coco_metrics: bool = False,
                   finetune: str = DEFAULT_FINETUNE) -> type[SPDDetectionTrainer]:
        """This trainer class recording COCO metrics each epoch (``coco_metrics``, implied by a COCO fitness),
        choosing best.pt by ``fitness`` (a `FITNESS` key) and fine-tuning an exact SPD upgrade by the rule
        ``finetune`` (a `FINETUNE_RULES` key). A subclass, so that ultralytics' DDP workers, which rebuild the trainer
        from its pickled class, get the same settings."""
        if fitness not in FITNESS:
            raise FitnessError(f"fitness must be one of {', '.join(FITNESS)}, got {fitness!r}")
        if finetune not in FINETUNE_RULES:
            raise ValueError(f"fine-tuning rule must be one of {', '.join(FINETUNE_RULES)}, got {finetune!r}")
        coco_metrics = bool(coco_metrics or FITNESS[fitness])
        if (fitness, coco_metrics, finetune) == (cls.fitness_name, cls.coco_metrics, cls.finetune_rule):
            return cls
        name = f"{cls.__name__}[fitness={fitness}, coco_metrics={coco_metrics}, finetune={finetune}]"
        attrs = {"fitness_name": fitness, "coco_metrics": coco_metrics, "finetune_rule": finetune,
                 "__module__": cls.__module__}
        return type(cls)(name, (cls,), attrs)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.best_epoch = None  # 1-based epoch of best_fitness, as recorded in the checkpoints (FITNESS_KEY)
        # this trainer's own list: the event's list is shared with the Model that made it, and with its later trainers
        event = "on_pretrain_routine_end"
        self.callbacks = {**self.callbacks, event: [*self.callbacks[event], _before_first_epoch]}
        self._finetune = None  # (rule record, [(parameter, keep mask)]) when training starts from an SPD upgrade

    def get_model(self, cfg=None, weights=None, verbose=True):
        """Stock model; pretrained weights go through `spd_yolo.upgrade.load_pretrained`: the exact SPD upgrade first
        when this model is their stock model's SPD twin, then ultralytics' transfer."""
        model = super().get_model(cfg=cfg, weights=None, verbose=verbose)
        if weights:
            load_pretrained(model, weights)
        return model

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """Stock; for a model fresh from an exact SPD upgrade, the fine-tuning rule (`finetune_rule`) first: its
        optimizer replaces ``auto``, and its zero-started weights are held at zero for its first epochs."""
        rule = self._start_finetune(unwrap_model(model))
        if rule is not None and str(name).lower() == "auto" and rule["optimizer"] != "auto":
            name = self.args.optimizer = rule["optimizer"]
            lr = self.args.lr0
        return super().build_optimizer(model, name=name, lr=lr, momentum=momentum, decay=decay, iterations=iterations)

    def _start_finetune(self, model) -> dict | None:
        """The fine-tuning rule of this run, recorded in the model's upgrade record (`RECORD_KEY`): the configured
        one for a model fresh from an upgrade, the run's own on resume, None otherwise (a model already fine-tuned)."""
        record = getattr(model, RECORD_KEY, None)
        if not isinstance(record, dict) or not record.get("new_weights"):
            return None
        rule = record.get("finetune")
        if rule is None:
            spec: FinetuneRule = FINETUNE_RULES[self.finetune_rule]
            rule = record["finetune"] = {"name": self.finetune_rule, "optimizer": spec.optimizer, "hold": spec.hold,
                                         "hold_epochs": spec.hold_epochs(self.epochs)}
            held = (f"held at zero for {rule['hold_epochs']} of {self.epochs} epochs" if rule["hold_epochs"]
                    else "trained from the first step")
            LOGGER.info(
                f"SPD upgrade fine-tuning rule '{rule['name']}': optimizer {spec.optimizer} unless one is named; the "
                f"zero-started taps of the {len(record['new_weights'])} re-indexed weights {held} (train.py "
                f"--upgrade-rule to change; measured in docs/benchmarks.md)"
            )
        elif not self.resume:
            return None
        params = dict(model.named_parameters())
        held = [(params[k], (~m).to(params[k].device, params[k].dtype)) for k, m in record["new_weights"].items()
                if k in params and rule["hold_epochs"] > 0]
        self._finetune = (rule, held)
        return rule

    def optimizer_step(self):
        """Stock, with the held zero-started weights of an SPD upgrade given no gradient (so they stay zero under
        SGD, Adam and weight decay alike) until the rule's hold ends."""
        if self._finetune is not None and self.epoch < self._finetune[0]["hold_epochs"]:
            for param, keep in self._finetune[1]:
                if param.grad is not None:
                    param.grad.mul_(keep)
        super().optimizer_step()

    def get_validator(self):
        """Return an SPDDetectionValidator (stock metrics during training, plus COCO metrics with coco_metrics; the
        full COCO table when save_json is set outside training)."""
        validator = SPDDetectionValidator(
            self.test_loader, save_dir=self.save_dir, args=copy(self.args), _callbacks=self.callbacks
        )
        validator.data, validator.names = self.data, self.data["names"]  # for coco_ground_truth before the first epoch
        return validator

    def before_first_epoch(self) -> None:
        """Run by ultralytics' ``on_pretrain_routine_end`` event (`_before_first_epoch`), after the callbacks added
        before training: with COCO metrics, results.csv gets their columns also for epochs that are not validated
        (-1), and a COCO fitness is checked to be defined on the validation set (`check_fitness`)."""
        if RANK not in {-1, 0}:
            return
        if self.coco_metrics:
            items, n = list(self.metrics.items()), len(self.validator.metrics.keys)  # the order validation returns
            coco_items = [*((c, -1.0) for c in COCO_COLUMNS.values()), (COCO_TIME_COLUMN, 0.0)]
            self.metrics = dict(items[:n] + coco_items + items[n:])
        self.check_fitness()

    def check_fitness(self) -> None:
        """Raise FitnessError if the COCO stat that selects best.pt is undefined on this validation set: pycocotools
        reports -1 for AP_S when no ground-truth object is small (area <= 32² pixels at the original image size, not
        crowd), for AP when there is no object at all."""
        stat = FITNESS[self.fitness_name]
        if stat is None:
            return
        truth = self.validator.coco_ground_truth()
        if coco.count_objects(truth.gt, AREA[stat], truth.evaluated) == 0:
            size = "" if AREA[stat] == "all" else "small (area <= 32x32 pixels at the original image size) "
            where = f"annotation file {truth.anno}" if truth.anno else "the YOLO labels"
            raise FitnessError(
                f"best.pt cannot be selected by COCO {stat}: the validation set ({where}) has no {size}object, so "
                f"{stat} is undefined; select by {'ap or ' if stat != 'AP' else ''}default instead"
            )

    def resume_training(self, ckpt):
        """Resume, continuing with the fitness the run started with (recorded in the checkpoint)."""
        saved = checkpoint_record(ckpt, FITNESS_KEY) if self.resume else None
        if saved:
            name, coco_metrics = saved["name"], saved["coco_metrics"]
            if (name, coco_metrics) != (self.fitness_name, self.coco_metrics):
                LOGGER.info(f"Resuming with the run's own fitness {name!r} (coco_metrics={coco_metrics})")
            self.fitness_name, self.coco_metrics, self.best_epoch = name, coco_metrics, saved["best_epoch"]
        super().resume_training(ckpt)

    def save_model(self):
        """Stock checkpoints, whose model also holds the records `FITNESS_KEY` (which fitness chose best.pt, its value
        and epoch) and `FINETUNE_KEY` (the fine-tuning rule), as attributes: read them with `checkpoint_record`."""
        if self.best_fitness == self.fitness:  # ultralytics writes best.pt from this epoch
            self.best_epoch = self.epoch + 1
        record = {
            "name": self.fitness_name,
            "column": COCO_COLUMNS.get(FITNESS[self.fitness_name]),
            "coco_metrics": self.coco_metrics,
            "best_value": None if self.best_fitness is None else float(self.best_fitness),
            "best_epoch": self.best_epoch,
        }
        setattr(self.ema.ema, FITNESS_KEY, record)  # ultralytics saves a copy of the EMA model as ckpt["ema"]
        if self._finetune is not None:
            setattr(self.ema.ema, FINETUNE_KEY, dict(self._finetune[0]))
        return super().save_model()

    def final_eval(self):
        """Stock (validate best.pt); with COCO metrics, that validation prints and saves the COCO table in the run
        folder (coco_metrics.json and .csv, predictions.json)."""
        if self.coco_metrics and self.validator is not None:
            self.validator.args.save_json = True
        super().final_eval()


def _before_first_epoch(trainer: SPDDetectionTrainer) -> None:
    """``on_pretrain_routine_end`` callback of every `SPDDetectionTrainer` (added by its ``__init__``)."""
    trainer.before_first_epoch()
