"""Detection of generated images (paper section 6.1, A.7): can a simple classifier on
ImageNet-pretrained ResNet-50 features tell real images from generated ones?

Recipe (config `detection`, paper values): ``images_per_source`` images (6,000) drawn at random
from the real source's train split and as many from the generated dataset, 12,000 in all;
``test_images_per_source`` of each (1,000) are held out, so 10,000 train and 2,000 test. Each image
is resized, centre-cropped and normalised as torchvision's ResNet-50 ImageNet weights expect and
becomes the 2,048-d pooled feature of the network (torchvision ``resnet50(weights=None)`` with the
state dict of the local file config `models.resnet50_detector`; the smoke run saves a random
one first and loads it the same way). Two detectors are trained on the train features with
Adam, ``iterations`` steps (5,000) of ``batch_size`` (128) features drawn in reshuffled passes:
a linear classifier and a 2-layer MLP (hidden 1,024, ReLU). Reported: the accuracy of each on
the test features, as a fraction (the paper: 0.83 linear, 0.86 MLP).

Two choices the paper does not state: Adam's learning rate (config `detection.lr`, default
Adam's own 1e-3), and whether features are standardised (config `detection.standardize_features`,
default yes: z-scored with the training features' mean and std, the usual practice for classifiers
on frozen features; without it the shared offset of every feature makes optimisation
ill-conditioned, and the MLP can stall at chance on the random network of the smoke run).
"""

import pickle

from contamination import records
from contamination.config import add_settings_arguments
from contamination.mixtures.manifests import named_rng, read_items
from contamination.data import ManifestDataset
from contamination.errors import ConfigError, DataError
from contamination.experiments import training
from contamination.experiments.classify_recipe import IMAGENET_MEAN, IMAGENET_STD

CLASSIFIERS = {"linear_on_resnet50_features": "linear", "mlp_on_resnet50_features": "mlp"}
TEST_ACCURACY, TRAIN_ACCURACY = "detection_accuracy", "detection_train_accuracy"
METRIC_NAMES = (TEST_ACCURACY, TRAIN_ACCURACY)  # what metrics.json of each detector holds
REAL, GENERATED = 0, 1
MIN_STD = 1e-6  # the scale standardize_features gives a feature constant over the training rows
PACKAGES = ("torch", "torchvision", "numpy")


def table_metrics(config: dict) -> list:
    """What every run's metrics.json holds (experiments.EXPERIMENTS)."""
    return list(METRIC_NAMES)


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("detect", help="real-vs-generated detectors on ResNet-50 features (metrics.json each)")
    add_settings_arguments(parser, "--spec", "detection",
                           help="config `detection` + seed + generated (the dataset's name)")
    parser.add_argument("--real", required=True, help="index of the real source (its 'train' split is used)")
    parser.add_argument("--generated", required=True, help="index of the generated dataset")
    parser.add_argument("--weights", required=True, help="ResNet-50 state dict (config models.resnet50_detector)")
    for model, kind in CLASSIFIERS.items():
        parser.add_argument(f"--out-{kind}", required=True, help=f"metrics.json of {model}")
    parser.set_defaults(run=run_detect)


def run_detect(args) -> None:
    import torch

    spec = args.spec
    device = torch.device("cuda" if spec["device"] in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    items = sample_detection_set(args.real, args.generated, spec)
    features = extract_features(load_feature_extractor(args.weights), items, spec, device)
    results = train_and_score(features, items["target"].to_numpy(), items["split"].to_numpy() == "test", spec, device)
    identity = {"detection": spec, "real": str(args.real), "generated": str(args.generated), "weights": str(args.weights)}
    for model, kind in CLASSIFIERS.items():
        metrics = {TEST_ACCURACY: results[kind]["test"], TRAIN_ACCURACY: results[kind]["train"]}
        provenance = records.provenance(identity | {"classifier": model}, spec["seed"], world_size=1,
                                        device=device.type, packages=PACKAGES)
        records.write_metrics(getattr(args, f"out_{kind}"), metrics, {}, "ok", provenance)
        print(f"{model}: test accuracy {metrics[TEST_ACCURACY]:.4f}, train accuracy {metrics[TRAIN_ACCURACY]:.4f}",
              flush=True)


# ---- data -----------------------------------------------------------------------------------


def sample_items(index_path, name: str, count: int, seed: int, key: str):
    """``count`` manifest rows (formats.MANIFEST_COLUMNS, origin = name) drawn without replacement,
    seeded by seed and name (mixtures.named_rng), from the training rows of a source index or all
    rows of a generated index (mixtures.read_items), in drawn order."""
    items = read_items(index_path, name).to_pandas().assign(origin=name)
    if count > len(items):
        raise ConfigError(f"{key}: {count} images wanted, but '{name}' ({index_path}) has only {len(items)}")
    chosen = named_rng(seed, name).choice(len(items), size=count, replace=False)
    return items.iloc[chosen].reset_index(drop=True)


def sample_detection_set(real_index, generated_index, spec: dict):
    """The manifest of the detection set: ``target`` 0 real / 1 generated, ``split`` train/test
    (the first test_images_per_source drawn of each source are the test images)."""
    import pandas as pd

    count, test = spec["images_per_source"], spec["test_images_per_source"]
    if not 0 < test < count:
        raise ConfigError(f"detection.test_images_per_source: {test} must be between 0 and images_per_source ({count})")
    parts = []
    for target, index, name in ((REAL, real_index, spec["real_source"]), (GENERATED, generated_index, spec["generated"])):
        items = sample_items(index, name, count, spec["seed"], "detection.images_per_source")
        parts.append(items.assign(target=target, split=["test"] * test + ["train"] * (count - test)))
    return pd.concat(parts, ignore_index=True)


def feature_transform(spec: dict):
    """What torchvision's ResNet-50 ImageNet weights expect: resize (bilinear), centre crop, normalise."""
    import torch
    from torchvision.transforms import InterpolationMode, v2

    return v2.Compose([
        v2.Resize(spec["resize_size"], interpolation=InterpolationMode.BILINEAR, antialias=True),
        v2.CenterCrop(spec["crop_size"]),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


# ---- features -------------------------------------------------------------------------------


def load_feature_extractor(weights_path):
    """torchvision ResNet-50 with the state dict at ``weights_path``; its classifier replaced by
    the identity, so it returns the 2,048-d average-pooled features. Evaluation mode."""
    import torch
    import torchvision

    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise DataError(f"cannot read ResNet-50 weights {weights_path} (config models.resnet50_detector): {error}") from error
    model = torchvision.models.resnet50(weights=None)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise DataError(f"{weights_path} (config models.resnet50_detector) is not a torchvision ResNet-50 "
                        f"state dict: {error}") from error
    model.fc = torch.nn.Identity()
    return model.eval()


def extract_features(model, items, spec: dict, device):
    """float32 array (len(items), 2048): the features of every item, in order."""
    import numpy as np

    return np.concatenate(list(feature_batches(model, items, feature_transform(spec), spec, device)))


def feature_batches(model, items, transform, spec: dict, device):
    """The features of ``items`` (a manifest frame of class images) in order, as float32 arrays
    of up to spec["feature_batch_size"] rows: ``model`` on each image through ``transform``."""
    import torch

    dataset = ManifestDataset(items, transform, target="label")
    loader = torch.utils.data.DataLoader(dataset, batch_size=spec["feature_batch_size"],
                                         num_workers=training.loader_workers(spec["num_workers"]),
                                         pin_memory=device.type == "cuda")
    model = model.to(device)
    with torch.inference_mode():
        for images, _ in loader:
            yield model(images.to(device, non_blocking=True)).float().cpu().numpy()


# ---- detectors ------------------------------------------------------------------------------


def build_detector(kind: str, width: int, hidden: int):
    from torch import nn

    if kind == "linear":
        return nn.Linear(width, 2)
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 2))


def train_and_score(features, targets, is_test, spec: dict, device) -> dict:
    """{"linear" | "mlp": {"train": accuracy, "test": accuracy}} of detectors trained on the
    rows where ``is_test`` is False. With spec["standardize_features"] every feature is first
    shifted and scaled by the mean and standard deviation of the training rows."""
    import numpy as np
    import torch

    x = torch.as_tensor(np.array(features, dtype=np.float32), device=device)
    y = torch.as_tensor(np.array(targets, dtype=np.int64), device=device)
    test = torch.as_tensor(np.array(is_test, dtype=bool), device=device)
    if spec["standardize_features"]:
        shift, scale = standardizer(x[~test])
        x = (x - shift) / scale
    results = {}
    for kind in CLASSIFIERS.values():
        detector = train_detector(kind, x[~test], y[~test], spec, device)
        results[kind] = {"train": accuracy(detector, x[~test], y[~test]), "test": accuracy(detector, x[test], y[test])}
    return results


def standardizer(x_train):
    """(shift, scale) that standardize features as (x - shift) / scale: the training features'
    mean and standard deviation (at least MIN_STD, for constant features)."""
    return x_train.mean(dim=0), x_train.std(dim=0).clamp(min=MIN_STD)


def train_detector(kind: str, x, y, spec: dict, device):
    """Adam on cross-entropy for spec["iterations"] steps of spec["batch_size"] rows; the rows
    are visited in a new random order every pass. Seeded: the same inputs give the same model."""
    import torch

    generator = torch.Generator().manual_seed(spec["seed"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        detector = build_detector(kind, x.shape[1], spec["mlp_hidden"]).to(device)
    optimizer = torch.optim.Adam(detector.parameters(), lr=spec["lr"])
    criterion = torch.nn.CrossEntropyLoss()
    order, cursor = torch.randperm(len(x), generator=generator), 0
    detector.train()
    for _ in range(spec["iterations"]):
        if cursor + spec["batch_size"] > len(order):
            order, cursor = torch.randperm(len(x), generator=generator), 0
        batch = order[cursor:cursor + spec["batch_size"]].to(device)
        cursor += spec["batch_size"]
        loss = criterion(detector(x[batch]), y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return detector.eval()


def accuracy(detector, x, y) -> float:
    import torch

    with torch.inference_mode():
        return float((detector(x).argmax(dim=1) == y).float().mean())
