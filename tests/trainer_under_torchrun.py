"""One trainer run under torchrun for tests/test_global_batch.py (not a test module).

argv: trainer (classify | caption | mae-pretrain | mae-linear-probe | iddpm-train), a JSON file of
its inputs, the output path. Rank 0 writes the run's StepWatch record (optimizer steps, learning
rates, batch split) as JSON (iddpm-train runs the CLI command, which writes training.json); every
rank writes to <output>.items-<rank> how many dataset items it loaded, so a test can tell that each
optimizer step took the whole global batch.
"""

import importlib
import json
import os
import sys
from pathlib import Path

from contamination.experiments import training


def classify(inputs, env, checkpointer):
    from contamination.experiments import classify

    _, watch = classify.train(inputs["spec"], inputs["manifest"], checkpointer, env)
    return watch.record()


def caption(inputs, env, checkpointer):
    from contamination.experiments.caption import fine_tune, load_blip

    settings = inputs["settings"]
    training.seed_everything(0, env)
    model, processor = load_blip(inputs["model"], settings)
    best = training.Checkpointer(Path(inputs["checkpoints"]) / "best", env, "run")
    _, record = fine_tune(model, processor, inputs["manifest"], None, settings, 0, env, checkpointer, best,
                          training.StopRequest())
    return record


def mae_pretrain(inputs, env, checkpointer):
    from contamination.experiments import mae

    _, _, status, reason, record = mae.pretrain(inputs["spec"], inputs["manifest"], checkpointer, env)
    assert status == "ok", reason
    return record


def mae_linear_probe(inputs, env, checkpointer):
    from contamination.experiments import mae

    status, _, reasons, record = mae.linear_probe(inputs["spec"], inputs["pretrained"], inputs["imagenet"],
                                                  checkpointer, env)
    assert status == "ok", reasons
    return record


TRAINERS = {"classify": classify, "caption": caption, "mae-pretrain": mae_pretrain,
            "mae-linear-probe": mae_linear_probe}
# The dataset class each trainer loads its items from.
DATASETS = {"classify": "contamination.data:ManifestDataset", "caption": "contamination.experiments.caption:CaptionTrainingSet",
            "mae-pretrain": "contamination.data:ManifestDataset", "mae-linear-probe": "contamination.data:ManifestDataset",
            "iddpm-train": "contamination.metrics.features:ArrayImages"}


def count_loads(dataset_class) -> list:
    """Count every item this process loads from ``dataset_class``; returns the one-element counter."""
    loads = [0]
    load = dataset_class.__getitem__

    def counted(self, index):
        loads[0] += 1
        return load(self, index)

    dataset_class.__getitem__ = counted
    return loads


if __name__ == "__main__":
    trainer, inputs, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    module, name = DATASETS[trainer].split(":")
    loads = count_loads(getattr(importlib.import_module(module), name))
    if trainer == "iddpm-train":
        from contamination.__main__ import main

        if main(["iddpm-train", *inputs["arguments"]]) != 0:
            sys.exit(1)
    else:
        env = training.setup_distributed("cpu")
        try:
            checkpointer = training.Checkpointer(inputs["checkpoints"], env, "run")
            record = TRAINERS[trainer](inputs, env, checkpointer)
            if env.is_main:
                out.write_text(json.dumps(record))
        finally:
            training.teardown_distributed(env)
    Path(f"{out}.items-{os.environ.get('RANK', 0)}").write_text(str(loads[0]))
