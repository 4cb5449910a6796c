"""Fine-tune VGG16 on VOC2007 for the multi-label pointing game (paper Table II).

The paper explains "the pre-trained VGG16 from the PyTorch model zoo" on VOC2007 val, but a
1000-class ImageNet model has no VOC classes to explain, and the authors released no VOC
weights. We therefore fine-tune torchvision's VGG16 ``IMAGENET1K_V1`` on VOC2007 *train*
(val stays unseen: it is the evaluation set) with this recipe:

* the last classifier layer (``classifier.6``, 4096 → 1000) is replaced by 4096 → 20;
* multi-label loss: ``BCEWithLogitsLoss`` on the 20 image-level labels (a class is present
  when any of its objects is, ``difficult`` ones included);
* input as for explanation: RGB resized to 224×224 without cropping, ImageNet
  normalisation; random horizontal flip for training;
* SGD, momentum 0.9, weight decay 1e-4, batch 32, 10 epochs; learning rate 1e-2 for the
  new layer and 1e-3 for the pretrained rest, cosine-annealed to 0 over all steps;
* after every epoch, mAP on val: average precision per class (area under the
  precision-recall curve, `sklearn.metrics.average_precision_score`; VOC2007's official
  11-point AP differs slightly), then the mean over the classes; an image whose objects of
  a class are all ``difficult`` is left out of that class's AP, as in the VOC protocol.

Training is resumable and reproducible: the checkpoint holds model, optimizer, epoch and
step; the data order of an epoch, the flips and dropout of a step are all seeded by
(seed, epoch, step), so a run stopped (``max_steps``) and resumed ends with the same
weights as one uninterrupted run (exactly on CPU).

On a GPU the default run takes minutes: ``python -m fdcam.paper.finetune VOCdevkit runs/voc``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from fdcam.errors import FdcamError
from fdcam.evaluation.voc import VOC2007, VOC_CLASSES, voc_multi_hot
from fdcam.models import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, preprocess_image

CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
FINAL_NAME = "{arch}_voc2007.pt"
_FORMAT = "fdcam-voc-finetune/1"


def _vgg16(pretrained: bool) -> nn.Module:
    from fdcam.models import load_model

    return load_model("vgg16", pretrained=pretrained).model


#: Architectures by name: a builder taking ``pretrained``. The tests add a tiny stand-in
#: (`tests.models.tiny_voc_cnn`) to run the same training code in a fraction of a second.
ARCHS: dict[str, Callable[[bool], nn.Module]] = {"vgg16": _vgg16}


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained weights; a resumed run must match it."""

    arch: str = "vgg16"
    pretrained: bool = True
    epochs: int = 10
    batch_size: int = 32
    lr_head: float = 1e-2  # the new 20-way layer
    lr_body: float = 1e-3  # every pretrained layer
    momentum: float = 0.9
    weight_decay: float = 1e-4
    image_size: int = 224
    hflip: bool = True
    seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    limit: int | None = None  # use only the first `limit` images of each split

    def check(self) -> None:
        """Reject impossible settings with a one-line message."""
        if self.arch not in ARCHS:
            raise FdcamError(f"unknown arch {self.arch!r}; available: {', '.join(ARCHS)}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise FdcamError(f"{name} must be >= 1; got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise FdcamError(f"limit must be >= 1 or None; got {self.limit}")
        if self.image_size < 32:
            raise FdcamError(f"image_size must be >= 32 (VGG16 halves it five times); "
                             f"got {self.image_size}")


@dataclass(frozen=True)
class VocMap:
    """Mean average precision over the VOC classes that have a positive image."""

    mean: float
    per_class: dict[str, float]  # NaN where the split has no positive image of the class


def build_voc_model(arch: str = "vgg16", pretrained: bool = True) -> nn.Module:
    """An ImageNet classifier of `arch` with its last Linear layer replaced by 20 outputs."""
    if arch not in ARCHS:
        raise FdcamError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    model = ARCHS[arch](pretrained)
    name = last_linear_name(model)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, child)
    setattr(parent, child, nn.Linear(old.in_features, len(VOC_CLASSES)))
    return model


def last_linear_name(model: nn.Module) -> str:
    """Qualified name of the classifier's last Linear layer (``classifier.6`` for VGG16)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise FdcamError(f"{type(model).__name__} has no Linear layer to replace")
    return names[-1]


class VocClassification(Dataset):
    """VOC2007 as image-level multi-label classification: ``(x [3, S, S], present, ignore)``."""

    def __init__(self, voc: VOC2007, image_size: int, limit: int | None = None) -> None:
        self.voc = voc
        self.size = (image_size, image_size)
        self.count = len(voc) if limit is None else min(limit, len(voc))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        image, target = self.voc[i]
        x = preprocess_image(image, IMAGENET_MEAN, IMAGENET_STD, self.size)
        present, ignore = voc_multi_hot(target["labels"], target["difficult"])
        return x, present, ignore


def voc_map(model: nn.Module, data: VocClassification, device: str | torch.device = "cpu",
            batch_size: int = 32, num_workers: int = 0) -> VocMap:
    """mAP of `model`'s 20 logits on `data` (AP per class, then the mean; module docstring)."""
    was_training = model.training
    model.eval()
    scores, labels, ignored = [], [], []
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    with torch.no_grad():
        for x, present, ignore in loader:
            scores.append(model(x.to(device)).float().cpu())
            labels.append(present)
            ignored.append(ignore)
    model.train(was_training)
    return mean_average_precision(torch.cat(scores), torch.cat(labels), torch.cat(ignored))


def mean_average_precision(scores: Tensor, present: Tensor, ignore: Tensor) -> VocMap:
    """AP per class over the images not ignored for it, then the mean over defined APs.

    ``scores``, ``present``, ``ignore``: [N, 20]. A class with no positive image has no AP
    (NaN) and is left out of the mean.
    """
    from sklearn.metrics import average_precision_score

    per_class = {}
    for k, name in enumerate(VOC_CLASSES):
        keep = ~ignore[:, k]
        y = present[keep, k].numpy()
        per_class[name] = (float(average_precision_score(y, scores[keep, k].numpy()))
                           if y.any() else math.nan)
    defined = [ap for ap in per_class.values() if not math.isnan(ap)]
    return VocMap(sum(defined) / len(defined) if defined else math.nan, per_class)


def finetune_voc(
    voc_root: str | Path,
    out_dir: str | Path,
    epochs: int = 10,
    device: str | torch.device | None = None,
    pretrained: bool = True,
    limit: int | None = None,
    *,
    arch: str = "vgg16",
    batch_size: int = 32,
    lr_head: float = 1e-2,
    lr_body: float = 1e-3,
    image_size: int = 224,
    seed: int = 0,
    max_steps: int | None = None,
    checkpoint_every: int = 200,
    num_workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Fine-tune `arch` on VOC2007 train (recipe: module docstring); resume from `out_dir`.

    Writes ``out_dir/checkpoint.pt`` (model, optimizer, epoch, step, history) every
    `checkpoint_every` steps and after every epoch, and ``out_dir/history.json`` (per-step
    loss, per-epoch val mAP). A finished run writes ``out_dir/vgg16_voc2007.pt`` (weights,
    recipe, history, val mAP) and returns its path; calling again returns it at once.
    ``max_steps`` stops after that many steps in all (an interruption on purpose) and
    returns the checkpoint's path; the next call resumes there. `device` defaults to CUDA
    when available; `num_workers` (data-loading processes) to 0 on CPU and up to 8 on CUDA,
    where JPEG decoding would otherwise starve the GPU.
    """
    recipe = Recipe(arch=arch, pretrained=pretrained, epochs=epochs, batch_size=batch_size,
                    lr_head=lr_head, lr_body=lr_body, image_size=image_size, seed=seed,
                    limit=limit)
    recipe.check()
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1) if device.type == "cuda" else 0
    # Check the data before writing anything.
    train = VocClassification(VOC2007(voc_root, recipe.train_split), image_size, limit)
    val = VocClassification(VOC2007(voc_root, recipe.val_split), image_size, limit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / FINAL_NAME.format(arch=arch)
    checkpoint_path = out / CHECKPOINT_NAME
    say = log or (lambda message: None)

    state = _load(checkpoint_path) if checkpoint_path.exists() else None
    if state is not None:
        _check_same_recipe(checkpoint_path, state["recipe"], recipe)
        if state["finished"] and final.exists():
            return final

    # Seed the new layer's initialisation; the rest comes from the pretrained weights, which
    # a resumed run need not fetch again: the checkpoint overwrites them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_voc_model(arch, pretrained and state is None).to(device).train()
    head = last_linear_name(model)
    head_params = list(model.get_submodule(head).parameters())
    head_ids = {id(p) for p in head_params}
    body_params = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.SGD(
        [{"params": body_params, "lr": lr_body, "base_lr": lr_body},
         {"params": head_params, "lr": lr_head, "base_lr": lr_head}],
        momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    epoch, step, step_in_epoch = 0, 0, 0
    history: dict[str, list[Any]] = {"loss": [], "epochs": []}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, step, step_in_epoch = state["epoch"], state["step"], state["step_in_epoch"]
        history = state["history"]
        say(f"resuming {checkpoint_path} at epoch {epoch}, step {step}")

    steps_per_epoch = math.ceil(len(train) / batch_size)
    total_steps = recipe.epochs * steps_per_epoch
    loss_fn = nn.BCEWithLogitsLoss()

    def save(finished: bool = False) -> None:
        _save_atomic({"format": _FORMAT, "recipe": asdict(recipe), "model": model.state_dict(),
                      "optimizer": optimizer.state_dict(), "epoch": epoch, "step": step,
                      "step_in_epoch": step_in_epoch, "finished": finished,
                      "history": history}, checkpoint_path)
        (out / HISTORY_NAME).write_text(json.dumps(history, indent=1) + "\n")

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # per-step seeding must not leak out
        while epoch < recipe.epochs:
            order = torch.randperm(len(train), generator=_generator(seed, epoch, -1)).tolist()
            loader = DataLoader(train, batch_size=batch_size, num_workers=num_workers,
                                sampler=order[step_in_epoch * batch_size:],
                                pin_memory=device.type == "cuda")
            for x, present, _ in loader:
                if max_steps is not None and step >= max_steps:
                    save()
                    say(f"stopped at step {step} (max_steps); resume with the same call")
                    return checkpoint_path
                x, present = x.to(device, non_blocking=True), present.to(device)
                if recipe.hflip:
                    flip = torch.rand(len(x), generator=_generator(seed, epoch, step)) < 0.5
                    flip = flip.to(device)
                    x[flip] = x[flip].flip(-1)
                torch.manual_seed(seed * 1_000_003 + step)  # dropout of this step
                cosine = 0.5 * (1 + math.cos(math.pi * step / total_steps))
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * cosine
                loss = loss_fn(model(x), present)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                history["loss"].append(loss.item())
                step += 1
                step_in_epoch += 1
                if checkpoint_every and step % checkpoint_every == 0:
                    save()
            result = voc_map(model, val, device, batch_size, num_workers)
            losses = history["loss"][-steps_per_epoch:]
            history["epochs"].append({"epoch": epoch, "step": step,
                                      "train_loss": sum(losses) / len(losses),
                                      "val_map": _none_if_nan(result.mean),
                                      "val_ap": {k: _none_if_nan(v)
                                                 for k, v in result.per_class.items()}})
            say(f"epoch {epoch + 1}/{recipe.epochs}: train loss "
                f"{history['epochs'][-1]['train_loss']:.4f}, val mAP {result.mean:.4f}")
            epoch, step_in_epoch = epoch + 1, 0
            save()

    last = history["epochs"][-1] if history["epochs"] else {}
    _save_atomic({"format": _FORMAT, "recipe": asdict(recipe), "model": model.state_dict(),
                  "history": history, "val_map": last.get("val_map")}, final)
    save(finished=True)
    say(f"wrote {final}")
    return final


def load_voc_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The fine-tuned network (any arch) from a final weights file or a checkpoint, in eval."""
    state = _load(Path(checkpoint))
    recipe = state["recipe"]
    model = build_voc_model(recipe["arch"], pretrained=False)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def load_voc_vgg16(checkpoint: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """VGG16 with 20 VOC outputs (order `VOC_CLASSES`) from `finetune_voc`'s output, in eval."""
    arch = _load(Path(checkpoint))["recipe"]["arch"]
    if arch != "vgg16":
        raise FdcamError(f"{checkpoint} holds a fine-tuned {arch!r}, not vgg16; "
                         f"use load_voc_model")
    return load_voc_model(checkpoint, device)


def voc_loaded_model(checkpoint: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The fine-tuned VGG16 as a `LoadedModel` (VOC class names, target ``features.30``)."""
    return LoadedModel("vgg16-voc2007", load_voc_vgg16(checkpoint, device), "features.30",
                       IMAGENET_MEAN, IMAGENET_STD, list(VOC_CLASSES))


def _generator(seed: int, epoch: int, step: int) -> torch.Generator:
    # One independent stream per (seed, epoch, step): resuming needs no saved RNG state.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch + 1) * 1_000_003 + step + 1)


def _none_if_nan(value: float) -> float | None:
    # JSON has no NaN: a class without positive images has no AP.
    return None if math.isnan(value) else value


def _save_atomic(obj: dict[str, Any], path: Path) -> None:
    # A crash while writing must not destroy the previous checkpoint.
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FdcamError(f"checkpoint {path} does not exist; expected a file written by "
                         f"finetune_voc")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and torch errors alike mean "not ours"
        raise FdcamError(f"{path} is not a readable checkpoint ({type(error).__name__}); "
                         f"expected a file written by finetune_voc") from error
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise FdcamError(f"{path} is not a finetune_voc checkpoint; expected format {_FORMAT}")
    return state


def _check_same_recipe(path: Path, saved: dict[str, Any], recipe: Recipe) -> None:
    wanted = asdict(recipe)
    changed = [f"{f.name}={saved.get(f.name)!r}→{wanted[f.name]!r}" for f in fields(Recipe)
               if saved.get(f.name) != wanted[f.name]]
    if changed:
        raise FdcamError(f"{path} was made with another recipe ({', '.join(changed)}); "
                         f"use the same settings to resume or a new out_dir")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fdcam.paper.finetune VOC_ROOT OUT_DIR [options]``: run `finetune_voc`."""
    parser = argparse.ArgumentParser(prog="python -m fdcam.paper.finetune",
                                     description="Fine-tune VGG16 on VOC2007 train "
                                     "(resumable; val mAP after every epoch).")
    parser.add_argument("voc_root", help="VOCdevkit/ or VOCdevkit/VOC2007")
    parser.add_argument("out_dir", help="checkpoints and the final weights go here")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default=None, help="default: cuda when available")
    parser.add_argument("--limit", type=int, default=None, help="first N images per split")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None,
                        help="default: 0 on CPU, up to 8 on CUDA")
    parser.add_argument("--no-pretrained", action="store_true")
    parser.add_argument("--download", action="store_true", help="fetch VOC2007 first")
    args = parser.parse_args(argv)
    try:
        if args.download:
            VOC2007(args.voc_root, "train", download=True)
            VOC2007(args.voc_root, "val", download=True)
        path = finetune_voc(args.voc_root, args.out_dir, args.epochs, args.device,
                            not args.no_pretrained, args.limit, batch_size=args.batch_size,
                            max_steps=args.max_steps, num_workers=args.num_workers, log=print)
    except FdcamError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
