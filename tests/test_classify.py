"""Classifier training and evaluation on tiny colour-coded image sets (CPU, 32 px, 1 thread):
learning, resume after a crash or a stop signal, divergence, logit restriction, Figure 3."""

import json
import math

import numpy as np
import pytest
import torch

import imagesets
from contamination.experiments import classify
from contamination.experiments import confusion
from contamination.experiments import training
from contamination import config as cfg
from contamination import records
from contamination.data import index_rows
from contamination.__main__ import main as cli_main
from contamination.errors import DataError
from helpers import signal_during_step

CLASSES = 4
# Real wnids in sorted (label) order: classes 0-2 are ImageNet-A and ImageNet-R classes, class 3
# (toilet tissue) is in neither, as the real ones hold 200 of 1,000.
WNIDS = ["n01498041", "n01531178", "n01534433", "n15075141"]


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    """A 4-class training manifest and ImageNet / -A / -R indexes; -A and -R hold classes 0-2."""
    root = tmp_path_factory.mktemp("images")
    images, labels = imagesets.class_images(48, CLASSES, 32, seed=0)  # same palette for all sets
    train = imagesets.write_images(root / "train", images[:32], "train")
    val = imagesets.write_images(root / "val", images[32:], "val")
    imagenet = imagesets.source_index(
        root / "imagenet.parquet", train + val, labels, ["train"] * 32 + ["val"] * 16, WNIDS
    )
    subset = [k for k in range(32, 48) if labels[k] != 3]
    paths = {"imagenet_val": imagenet}
    for name in ("imagenet_a", "imagenet_r"):
        paths[name] = imagesets.source_index(
            root / f"{name}.parquet", [val[k - 32] for k in subset], labels[subset], ["val"] * len(subset), WNIDS
        )
    manifest = imagesets.manifest(root / "manifest.parquet", train, labels[:32])
    return manifest, paths


def tiny_spec(**recipe_changes):
    recipe = dict(cfg.load()["classification"]["models"]["resnet50"])
    recipe.update(epochs=3, global_batch_size=8, lr=0.01, train_crop_size=32, val_resize_size=32, val_crop_size=32)
    recipe.update(recipe_changes)
    return {"model": "resnet18", "recipe": recipe, "num_classes": CLASSES, "seed": 0, "device": "cpu",
            "num_workers": 0, "print_freq": 100, "keep_checkpoint": True, "checkpoint_every_minutes": 30}


CPU = training.DistEnv(0, 1, 0, torch.device("cpu"))


def final_checkpoint(directory):
    return torch.load(directory / training.CHECKPOINT_NAME, map_location="cpu", weights_only=True)


def run(spec, image_sets, directory):
    manifest, indexes = image_sets
    return classify.train_and_evaluate(spec, manifest, indexes, directory, CPU)


def assert_same_weights(first, second):
    for key in ("model", "optimizer"):
        assert first["state"][key].keys() == second["state"][key].keys()
    for name, tensor in first["state"]["model"].items():
        assert torch.equal(tensor, second["state"]["model"][name]), name


def test_a_tiny_model_learns_a_separable_set_well_above_chance(image_sets, tmp_path):
    status, metrics, reasons, matrix, _ = run(tiny_spec(epochs=10, lr=0.003), image_sets, tmp_path)
    assert status == "ok" and reasons == {}
    assert metrics["top1_imagenet_val"] >= 75.0  # chance: 25%
    assert matrix.shape == (CLASSES, CLASSES) and matrix.sum() == 16
    assert np.trace(matrix) / 16 * 100 == pytest.approx(metrics["top1_imagenet_val"])
    assert set(metrics) == set(classify.METRIC_NAMES)


def test_a_run_shorter_than_the_checkpoint_interval_saves_once_at_its_end(image_sets, tmp_path, monkeypatch):
    saved, real_save = [], training.Checkpointer.save
    monkeypatch.setattr(training.Checkpointer, "save",
                        lambda self, position, **objects: (saved.append(position), real_save(self, position, **objects)))
    run(tiny_spec(), image_sets, tmp_path)  # 3 epochs in seconds, checkpoint_every_minutes 30
    assert saved == [training.Position(3, 0)]
    assert final_checkpoint(tmp_path)["position"] == {"epoch": 3, "step": 0}


def test_resume_after_a_crash_at_an_epoch_end_gives_identical_weights(image_sets, tmp_path, monkeypatch):
    spec = tiny_spec()
    # Every epoch ends with a checkpoint here, as when checkpoint_every_minutes has passed.
    monkeypatch.setattr(training.Checkpointer, "end_epoch",
                        lambda self, position, last, **objects: self.save(position, **objects))
    run(spec, image_sets, tmp_path / "straight")
    straight = final_checkpoint(tmp_path / "straight")

    real_save = training.Checkpointer.save

    def crash_after_epoch_one(self, position, **objects):
        real_save(self, position, **objects)
        if position == training.Position(2, 0):
            raise KeyboardInterrupt("killed")  # like a node failure: nothing after the checkpoint runs

    monkeypatch.setattr(training.Checkpointer, "save", crash_after_epoch_one)
    with pytest.raises(KeyboardInterrupt):
        run(spec, image_sets, tmp_path / "crashed")
    assert final_checkpoint(tmp_path / "crashed")["position"] == {"epoch": 2, "step": 0}
    monkeypatch.setattr(training.Checkpointer, "save", real_save)
    torch.manual_seed(999)  # the rerun must not depend on the state the crash left behind

    _, metrics, _, _, _ = run(spec, image_sets, tmp_path / "crashed")
    resumed = final_checkpoint(tmp_path / "crashed")
    assert resumed["position"] == straight["position"] == {"epoch": 3, "step": 0}
    assert_same_weights(straight, resumed)


def test_sigusr1_checkpoints_mid_epoch_exits_75_and_resumes_identically(image_sets, tmp_path, monkeypatch):
    """SIGUSR1 (SLURM's warning; SIGTERM takes the same handler) during the 2nd step of epoch 1 (4 steps per epoch): the step finishes, the
    checkpoint holds (1, 2), the CLI exits 75; the rerun continues from that batch and ends with
    the uninterrupted run's weights, EMA, optimizer state and metrics."""
    spec = tiny_spec(model_ema=True, model_ema_steps=1, model_ema_decay=0.9, mixup_alpha=0.2)
    _, metrics, _, matrix, steps = run(spec, image_sets, tmp_path / "straight")
    straight = final_checkpoint(tmp_path / "straight")

    arguments = cli_arguments(spec, image_sets, tmp_path)
    signal_during_step(monkeypatch, 6)
    with pytest.raises(SystemExit) as stopped:
        cli_main(arguments)
    assert stopped.value.code == training.EXIT_RESUME
    assert final_checkpoint(tmp_path / "checkpoints")["position"] == {"epoch": 1, "step": 2}
    assert not (tmp_path / "metrics.json").exists()

    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    assert cli_main(arguments) == 0
    resumed = final_checkpoint(tmp_path / "checkpoints")
    assert_same_weights(straight, resumed)
    for name in ("ema", "scheduler", "watch"):
        assert resumed["state"][name].keys() == straight["state"][name].keys()
    for name, tensor in straight["state"]["ema"].items():
        assert torch.equal(tensor, resumed["state"]["ema"][name]), name
    assert resumed["state"]["scheduler"] == straight["state"]["scheduler"]
    for number, state in straight["state"]["optimizer"]["state"].items():
        assert all(torch.equal(value, resumed["state"]["optimizer"]["state"][number][key])
                   for key, value in state.items())
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["status"] == "ok" and written["metrics"] == metrics and written["training"] == steps
    assert np.array_equal(np.load(tmp_path / "confusion.npy"), matrix)


@pytest.mark.parametrize("signalled_call, position", [(14, (1, 4)), (11, (0, 11))])
def test_a_stop_on_the_first_micro_step_of_a_group_resumes_identically_with_accumulation(
        image_sets, tmp_path, monkeypatch, signalled_call, position):
    """Accumulation 2 (global batch 6 = 2 x 3 per forward pass), 32 items: 11 batches per epoch, the
    last group of one short batch. A stop on the first micro-step of a group (epoch 1 batch 2, or
    the epoch's short last group) saves after that group's update, at the micro-batches done, and
    the resumed run ends with the uninterrupted run's weights, EMA, optimizer and step counts."""
    spec = tiny_spec(epochs=2, global_batch_size=6, max_batch_per_process=3, model_ema=True, model_ema_steps=1,
                     model_ema_decay=0.9)
    manifest, _ = image_sets

    def train(directory):
        checkpointer = classify.run_checkpointer(spec, manifest, directory, CPU)
        _, watch = classify.train(spec, manifest, checkpointer, CPU)
        assert watch.batch.accumulation_steps == 2 and watch.batch.per_process_batch == 3
        return final_checkpoint(directory)

    straight = train(tmp_path / "straight")
    assert straight["state"]["watch"]["steps"] == 2 * 6  # 5 whole groups + the short one per epoch
    signal_during_step(monkeypatch, signalled_call)
    with pytest.raises(training.Interrupted):
        train(tmp_path / "resumed")
    assert final_checkpoint(tmp_path / "resumed")["position"] == dict(zip(("epoch", "step"), position))
    monkeypatch.undo()
    torch.manual_seed(99)  # the retry must not depend on the state the stopped run left
    resumed = train(tmp_path / "resumed")
    assert_same_weights(straight, resumed)
    assert resumed["state"]["watch"] == straight["state"]["watch"]
    for name, tensor in straight["state"]["ema"].items():
        assert torch.equal(tensor, resumed["state"]["ema"][name]), name
    for number, state in straight["state"]["optimizer"]["state"].items():
        assert all(torch.equal(value, resumed["state"]["optimizer"]["state"][number][key])
                   for key, value in state.items())


def cli_arguments(spec, image_sets, directory):
    manifest, indexes = image_sets
    return [
        "train-classifier", "--spec", json.dumps(spec), "--manifest", str(manifest),
        "--imagenet", str(indexes["imagenet_val"]), "--imagenet-a", str(indexes["imagenet_a"]),
        "--imagenet-r", str(indexes["imagenet_r"]), "--checkpoint-dir", str(directory / "checkpoints"),
        "--out", str(directory / "metrics.json"), "--confusion", str(directory / "confusion.npy"),
    ]


def test_checkpoint_is_deleted_after_the_outputs_unless_kept(image_sets, tmp_path):
    spec = dict(tiny_spec(epochs=1), keep_checkpoint=False)
    assert cli_main(cli_arguments(spec, image_sets, tmp_path)) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    assert np.load(tmp_path / "confusion.npy").shape == (CLASSES, CLASSES)
    assert not (tmp_path / "checkpoints" / training.CHECKPOINT_NAME).exists()


def test_a_changed_recipe_does_not_resume_an_old_checkpoint(image_sets, tmp_path):
    run(tiny_spec(epochs=1), image_sets, tmp_path)
    spec = tiny_spec(epochs=2)
    checkpointer = training.Checkpointer(tmp_path, CPU, records.sha256_of_json(classify.run_identity(spec, image_sets[0])))
    assert checkpointer.load(model=torch.nn.Linear(1, 1)) == training.Position()


def test_divergence_ends_cleanly_with_null_metrics_and_a_nan_table_cell(image_sets, tmp_path):
    from contamination.reporting import tables

    out, matrix = tmp_path / "metrics.json", tmp_path / "confusion.npy"
    spec = tiny_spec(lr=1e38)  # SGD at this rate overflows the weights within a few steps
    code = cli_main(cli_arguments(spec, image_sets, tmp_path))
    assert code == 0  # the workflow goes on
    written = json.loads(out.read_text())
    assert written["status"] == "diverged"
    assert written["metrics"] == {name: None for name in classify.METRIC_NAMES}
    # The first update overflows the weights: found before the next step, with its step.
    assert all("training diverged: non-finite weights at optimizer step 1" in written["reasons"][name]
               for name in classify.METRIC_NAMES)
    assert written["training"]["diverged"] == {"step": 1, "reason": "non-finite weights"}
    assert np.load(matrix).shape == (0, 0)

    spec_table = {"name": "table1", "reported_table": "1", "models": ["resnet50"], "metrics": ["top1_imagenet_val"],
                  "rows": [{"dataset": "IN/WV-80%", "mixture": "in_wv_80"}]}
    table = tables.build_table(spec_table, {"IN/WV-80%|resnet50": out})
    assert math.isnan(table.loc[0, "measured"]) and table.loc[0, "status"] == "diverged"
    assert "non-finite weights" in table.loc[0, "note"]


@pytest.mark.parametrize("report_weights", ["ema", "raw"])
def test_ema_and_raw_weights_are_both_scored_and_the_table_reads_the_chosen(image_sets, tmp_path, monkeypatch,
                                                                            report_weights):
    from torch.optim.swa_utils import AveragedModel

    scored = []

    def evaluate(model, spec, eval_indexes, env):
        weights = "ema" if isinstance(model, AveragedModel) else "raw"
        scored.append(weights)
        return {name: {"ema": 10.0, "raw": 20.0}[weights] for name in classify.METRIC_NAMES}, np.array([[weights]])

    monkeypatch.setattr(classify, "evaluate_all", evaluate)
    spec = tiny_spec(epochs=1, model_ema=True, model_ema_steps=1, report_weights=report_weights)
    status, metrics, _, matrix, steps = run(spec, image_sets, tmp_path)
    assert status == "ok" and sorted(scored) == ["ema", "raw"] and matrix[0, 0] == report_weights
    chosen = {"ema": 10.0, "raw": 20.0}[report_weights]
    for name in classify.METRIC_NAMES:
        assert (metrics[name], metrics[f"{name}_ema"], metrics[f"{name}_raw"]) == (chosen, 10.0, 20.0)
    assert steps.items() >= {"optimizer_steps": 4, "skipped_steps": 0, "max_consecutive_skipped_steps": None,
                             "diverged": None}.items()


def test_the_paper_reports_swin_s_with_ema_weights_and_ema_needs_an_ema_model():
    from contamination.experiments import classify_recipe
    from contamination.errors import ConfigError

    models = cfg.load()["classification"]["models"]
    assert models["swin_s"]["report_weights"] == "ema" and models["swin_s"]["model_ema"]
    assert models["resnet50"]["report_weights"] == "raw"
    with pytest.raises(ConfigError, match="classification.models.resnet50.report_weights: 'ema'"):
        classify_recipe.check(dict(models["resnet50"], report_weights="ema"), "classification.models.resnet50")


def test_restricted_topk_only_ranks_the_given_classes():
    logits = torch.tensor([[9.0, 1.0, 3.0, 2.0, 8.0], [0.0, 5.0, 1.0, 7.0, 6.0]])
    classes = [1, 2, 3]
    top = classify.restricted_topk(logits, classes, k=5)
    assert top.tolist() == [[2, 3, 1], [3, 1, 2]]  # class 0 / 4 would win unrestricted


def test_topk_accuracy_and_confusion_matrix():
    labels = np.array([0, 1, 2, 2])
    predictions = np.array([[0, 1], [2, 1], [2, 0], [1, 0]])
    assert classify.topk_accuracy(labels, predictions, 1) == 50.0
    assert classify.topk_accuracy(labels, predictions, 2) == 75.0
    matrix = classify.confusion_matrix(labels, predictions[:, 0], 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 1]]


def test_evaluation_rows_are_the_val_split(image_sets):
    rows = index_rows(image_sets[1]["imagenet_val"], "val")
    assert len(rows) == 16 and list(rows.columns) == ["id", "uri", "label", "caption", "origin"]


def test_figure3_groups_classes_and_refuses_a_diverged_run(tmp_path):
    classes = tmp_path / "classes.parquet"
    import pandas as pd

    pd.DataFrame({"label": range(6), "wnid": [f"n{k:08d}" for k in range(6)], "names": [["x"]] * 6}).to_parquet(classes)
    superclasses = tmp_path / "big_12.csv"
    superclasses.write_text("wnid,superclass\nn00000004,dog\nn00000001,dog\nn00000002,bird\nn99999999,fish\n")
    groups = confusion.superclass_groups([f"n{k:08d}" for k in range(6)], confusion.read_superclasses(superclasses))
    assert groups == [("dog", [1, 4]), ("bird", [2])]  # classes 0, 3, 5 are in no superclass
    ordered, bounds = confusion.regroup(np.arange(36).reshape(6, 6), groups)
    assert ordered.tolist() == [[7, 10, 8], [25, 28, 26], [13, 16, 14]] and bounds == [(0, 2), (2, 3)]
    assert [labels for _, labels in confusion.index_block_groups(6, 4)] == [[0, 1], [2, 3], [4], [5]]

    matrix = tmp_path / "ok.npy"
    np.save(matrix, np.diag([3, 1, 2, 0, 5, 1]))
    out = tmp_path / "figure3.png"
    assert cli_main(["plot-confusion", "--matrices", str(matrix), str(matrix), "--titles", "ImageNet", "SD-ImageNet",
                     "--classes", str(classes), "--superclasses", str(superclasses), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    diverged = tmp_path / "diverged.npy"
    np.save(diverged, np.zeros((0, 0), dtype=np.int64))
    assert cli_main(["plot-confusion", "--matrices", str(diverged), "--titles", "x", "--classes", str(classes),
                     "--out", str(out)]) == 2


class FixedLogits(torch.nn.Module):
    """Scores every image the same: class 3 first, then 2, 1, 0."""

    def forward(self, images):
        return torch.tensor([[1.0, 2.0, 5.0, 9.0]]).expand(images.shape[0], -1)


def test_imagenet_a_and_r_are_scored_on_their_official_classes_not_on_those_their_index_holds(image_sets, tmp_path):
    _, indexes = image_sets
    rows = index_rows(indexes["imagenet_val"], "val")
    only_class_1 = rows[rows["label"] == 1]
    partial = imagesets.source_index(tmp_path / "partial.parquet", list(only_class_1["uri"]), only_class_1["label"],
                                     ["val"] * len(only_class_1), WNIDS)
    eval_indexes = dict(indexes, imagenet_a=partial, imagenet_r=partial)
    metrics, _ = classify.evaluate_all(FixedLogits(), tiny_spec(), eval_indexes, CPU)
    # Over classes 0-2 (official, in use) the prediction is class 2: wrong. Restricted to the
    # index's classes (only 1), it would be right.
    assert metrics["top1_imagenet_a"] == metrics["top1_imagenet_r"] == 0.0
    assert metrics["top5_imagenet_a"] == 100.0  # top-3 of the 3 classes
    assert metrics["top1_imagenet_val"] == 25.0  # unrestricted: class 3, a quarter of val
    labels = classify.official_labels("imagenet_a", indexes["imagenet_val"], only_class_1, partial)
    assert labels.tolist() == [0, 1, 2]


def test_an_index_with_images_outside_the_official_classes_is_refused(image_sets):
    _, indexes = image_sets
    rows = index_rows(indexes["imagenet_val"], "val")
    with pytest.raises(DataError, match=r"outside the official imagenet_r classes in use \(labels \[3\]\)"):
        classify.official_labels("imagenet_r", indexes["imagenet_val"], rows, indexes["imagenet_val"])


class UnofficialClassFirst(torch.nn.Module):
    """Scores every image the same: class 2 first, then 3, 1, 0."""

    def forward(self, images):
        return torch.tensor([[1.0, 2.0, 9.0, 5.0]]).expand(images.shape[0], -1)


def test_imagenet_a_and_r_scoring_keeps_imagenet_labels_when_the_official_classes_in_use_are_not_the_first(
        image_sets, tmp_path):
    # Tench and cock (labels 0, 2) are in neither list; goldfinch and house finch (1, 3) in both.
    gapped = ["n01440764", "n01498041", "n01514668", "n01531178"]
    _, indexes = image_sets
    rows = index_rows(indexes["imagenet_val"], "val")
    imagenet = imagesets.source_index(tmp_path / "imagenet.parquet", list(rows["uri"]), rows["label"],
                                      ["val"] * len(rows), gapped)
    class_3 = rows[rows["label"] == 3]
    only_class_3 = imagesets.source_index(tmp_path / "class3.parquet", list(class_3["uri"]), class_3["label"],
                                          ["val"] * len(class_3), gapped)
    eval_indexes = {"imagenet_val": imagenet, "imagenet_a": only_class_3, "imagenet_r": only_class_3}
    assert classify.official_labels("imagenet_r", imagenet, class_3, only_class_3).tolist() == [1, 3]
    metrics, _ = classify.evaluate_all(UnofficialClassFirst(), tiny_spec(), eval_indexes, CPU)
    # Among classes 1 and 3 the prediction is 3 (right); unrestricted it is 2, and a position in
    # the restricted list (1) or the first two labels (0, 1) would name class 1: all wrong.
    assert metrics["top1_imagenet_a"] == metrics["top1_imagenet_r"] == 100.0
    assert metrics["top1_imagenet_val"] == 25.0


def big12_is_a_file(path, extra_dogs=0):
    """A WordNet is-a file: two classes under each big_12 superclass (dogs also reach carnivore
    through an earlier-listed parent, which the last-listed parent overrides), one class in none."""
    lines, wnids = [], []
    for index, superclass in enumerate(confusion.BIG_12):
        for member in range(2 + (extra_dogs if superclass == "n02084071" else 0)):
            intermediate, wnid = f"n9{index:02d}{member:05d}", f"n1{index:02d}{member:05d}"
            lines += [f"{superclass} {intermediate}", f"{intermediate} {wnid}"]
            wnids.append(wnid)
    lines += ["n02075296 n02084071", "n00000001 n02084071"]  # dog: carnivore, then domestic animal
    lines.append("n00000001 n00000002")
    wnids.append("n00000002")
    path.write_text("\n".join(lines) + "\n")
    return sorted(wnids)


def test_big12_groups_follow_the_last_listed_parent_and_balance(tmp_path):
    wnids = big12_is_a_file(tmp_path / "wordnet.is_a.txt", extra_dogs=3)
    parents = confusion.read_is_a(tmp_path / "wordnet.is_a.txt")
    assert parents["n02084071"] == "n00000001"
    unbalanced = dict(confusion.big12_groups(wnids, parents, balanced=False))
    assert list(unbalanced) == list(confusion.BIG_12.values())
    label = {wnid: index for index, wnid in enumerate(wnids)}
    assert unbalanced["dog"] == sorted(label[f"n100{member:05d}"] for member in range(5))
    assert unbalanced["carnivore"] == [label["n10600000"], label["n10600001"]]  # no dog in it
    assert label["n00000002"] not in {c for labels in unbalanced.values() for c in labels}
    balanced = dict(confusion.big12_groups(wnids, parents))
    assert balanced["dog"] == unbalanced["dog"][:2] and all(len(labels) == 2 for labels in balanced.values())


def test_big12_groups_refuse_overlapping_or_missing_superclasses(tmp_path):
    wnids = big12_is_a_file(tmp_path / "wordnet.is_a.txt")
    parents = confusion.read_is_a(tmp_path / "wordnet.is_a.txt")
    parents["n02084071"] = "n02075296"  # dog under carnivore: a dog class is in two superclasses
    with pytest.raises(DataError, match="two big_12 superclasses"):
        confusion.big12_groups(wnids, parents)
    with pytest.raises(DataError, match="no class of this run is under"):
        confusion.big12_groups(wnids[:4], confusion.read_is_a(tmp_path / "wordnet.is_a.txt"))
    (tmp_path / "bad.txt").write_text("n1 n2 n3\n")
    with pytest.raises(DataError, match="bad.txt:1"):
        confusion.read_is_a(tmp_path / "bad.txt")


def test_plot_confusion_with_a_wordnet_file_says_big_12(tmp_path, capsys):
    wnids = big12_is_a_file(tmp_path / "wordnet.is_a.txt")
    import pandas as pd

    classes = tmp_path / "classes.parquet"
    pd.DataFrame({"label": range(len(wnids)), "wnid": wnids, "names": [["x"]] * len(wnids)}).to_parquet(classes)
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.eye(len(wnids), dtype=np.int64))
    out = tmp_path / "figure3.png"
    assert cli_main(["plot-confusion", "--matrices", str(matrix), "--titles", "ImageNet", "--classes", str(classes),
                     "--wordnet-is-a", str(tmp_path / "wordnet.is_a.txt"), "--out", str(out)]) == 0
    assert out.stat().st_size > 0 and "12 groups" in capsys.readouterr().out
