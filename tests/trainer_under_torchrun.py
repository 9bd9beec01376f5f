"""One trainer run under torchrun for tests/test_global_batch.py (not a test module).

argv: trainer (classify | caption | mae-pretrain | mae-linear-probe), a JSON file of its inputs,
the output path. Rank 0 writes the run's StepWatch record (optimizer steps, learning rates, batch
split) as JSON.
"""

import json
import sys
from pathlib import Path

from contamination import training


def classify(inputs, env, checkpointer):
    from contamination import classify

    _, watch = classify.train(inputs["spec"], inputs["manifest"], checkpointer, env)
    return watch.record()


def caption(inputs, env, checkpointer):
    from contamination.caption import fine_tune, load_blip

    settings = inputs["settings"]
    training.seed_everything(0, env)
    model, processor = load_blip(inputs["model"], settings)
    best = training.Checkpointer(Path(inputs["checkpoints"]) / "best", env, "run")
    _, record = fine_tune(model, processor, inputs["manifest"], None, settings, 0, env, checkpointer, best,
                          training.StopRequest())
    return record


def mae_pretrain(inputs, env, checkpointer):
    from contamination import mae

    _, _, status, reason, record = mae.pretrain(inputs["spec"], inputs["manifest"], checkpointer, env)
    assert status == "ok", reason
    return record


def mae_linear_probe(inputs, env, checkpointer):
    from contamination import mae

    status, _, reasons, record = mae.linear_probe(inputs["spec"], inputs["pretrained"], inputs["imagenet"],
                                                  checkpointer, env)
    assert status == "ok", reasons
    return record


TRAINERS = {"classify": classify, "caption": caption, "mae-pretrain": mae_pretrain,
            "mae-linear-probe": mae_linear_probe}

if __name__ == "__main__":
    trainer, inputs, out = sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3])
    env = training.setup_distributed("cpu")
    try:
        checkpointer = training.Checkpointer(inputs["checkpoints"], env, "run")
        record = TRAINERS[trainer](inputs, env, checkpointer)
        if env.is_main:
            out.write_text(json.dumps(record))
    finally:
        training.teardown_distributed(env)
