"""The paper's torchvision recipes (config/config.yaml) mapped to optimizer groups, schedules,
transforms and EMA decay."""

import pytest
import torch
import torchvision

from contamination.experiments import classify_recipe as recipes
from contamination import config as cfg
from contamination.errors import ConfigError


@pytest.fixture(scope="module")
def paper_recipes():
    return cfg.load()["classification"]["models"]


def decay_by_parameter(model, recipe):
    """{parameter name: weight decay} from the recipe's parameter groups."""
    decay_of = {id(p): group["weight_decay"] for group in recipes.parameter_groups(model, recipe) for p in group["params"]}
    return {name: decay_of[id(p)] for name, p in model.named_parameters()}


def norm_parameter_names(model):
    return {
        f"{module_name}.{name}" if module_name else name
        for module_name, module in model.named_modules()
        if isinstance(module, recipes.norm_classes())
        for name, _ in module.named_parameters(recurse=False)
    }


def test_resnet50_decays_every_parameter_including_batchnorm(paper_recipes):
    model = torchvision.models.resnet50(num_classes=10)
    decays = decay_by_parameter(model, paper_recipes["resnet50"])
    assert set(decays.values()) == {1e-4}
    assert len(decays) == len(list(model.parameters()))


def test_swin_s_has_no_decay_on_norms_biases_and_position_bias_tables(paper_recipes):
    torch.manual_seed(0)
    model = torchvision.models.swin_s(num_classes=10)
    decays = decay_by_parameter(model, paper_recipes["swin_s"])
    norms = norm_parameter_names(model)
    assert norms and all(decays[name] == 0.0 for name in norms)
    biases = [name for name in decays if name.endswith(".bias")]
    assert biases and all(decays[name] == 0.0 for name in biases)
    tables = [name for name in decays if name.endswith("relative_position_bias_table")]
    assert len(tables) == 24 and all(decays[name] == 0.0 for name in tables)  # one per block
    decayed = {name for name, decay in decays.items() if decay == 0.05}
    assert decayed == {name for name in decays if name not in norms and name not in biases and name not in tables}
    assert "head.weight" in decayed and "features.0.0.weight" in decayed


def test_convnext_tiny_has_no_decay_on_norms_only(paper_recipes):
    model = torchvision.models.convnext_tiny(num_classes=10)
    decays = decay_by_parameter(model, paper_recipes["convnext_tiny"])
    norms = norm_parameter_names(model)
    assert norms and all(decays[name] == 0.0 for name in norms)
    others = [name for name in decays if name not in norms]
    assert all(decays[name] == 0.05 for name in others)
    assert any(name.endswith(".bias") for name in others)  # conv/linear biases keep the decay


def test_optimizers_follow_the_recipes(paper_recipes):
    model = torch.nn.Linear(2, 2)
    sgd = recipes.build_optimizer(model, paper_recipes["resnet50"])
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.1 and sgd.defaults["momentum"] == 0.9 and not sgd.defaults["nesterov"]
    adamw = recipes.build_optimizer(model, paper_recipes["swin_s"])
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 1e-3
    assert {group["weight_decay"] for group in adamw.param_groups} == {0.05, 0.0}  # weight / bias


def learning_rates(recipe):
    optimizer = recipes.build_optimizer(torch.nn.Linear(2, 2), recipe)
    scheduler = recipes.build_scheduler(optimizer, recipe)
    rates = []
    for _ in range(recipe["epochs"]):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_resnet50_schedule_divides_by_ten_every_30_epochs(paper_recipes):
    rates = learning_rates(paper_recipes["resnet50"])
    assert len(rates) == 90
    assert rates[0] == rates[29] == pytest.approx(0.1)
    assert rates[30] == pytest.approx(0.01) and rates[60] == pytest.approx(0.001)


def test_swin_s_schedule_warms_up_linearly_then_cosine_to_lr_min(paper_recipes):
    rates = learning_rates(paper_recipes["swin_s"])
    assert rates[0] == pytest.approx(1e-3 * 0.01)
    assert rates[10] == pytest.approx(1e-3 * (0.01 + 0.99 * 10 / 20))
    assert rates[20] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-5, rel=0.05) and min(rates[20:]) >= 1e-5


def test_ema_decay_is_rescaled_as_in_the_reference(paper_recipes):
    swin = paper_recipes["swin_s"]
    # The reference's world size x per-GPU batch is the global batch: 8 GPUs x 128 images x every 32
    # steps / 300 epochs, times (1 - 0.99998), whatever the job's process count.
    assert recipes.ema_decay_per_update(swin) == pytest.approx(1 - 2e-5 * 8 * 128 * 32 / 300)
    assert recipes.ema_decay_per_update(dict(swin, model_ema_decay=0.5)) == 0.0  # alpha capped at 1


def test_transforms_follow_the_recipe(paper_recipes):
    from PIL import Image

    image = Image.new("RGB", (300, 260), (120, 30, 200))
    swin = paper_recipes["swin_s"]
    assert recipes.train_transform(swin)(image).shape == (3, 224, 224)
    assert recipes.eval_transform(paper_recipes["convnext_tiny"])(image).shape == (3, 224, 224)
    assert recipes.train_transform(paper_recipes["convnext_tiny"])(image).shape == (3, 176, 176)
    names = [type(step).__name__ for step in recipes.train_transform(swin).transforms]
    assert names[:3] == ["RandomResizedCrop", "RandomHorizontalFlip", "TrivialAugmentWide"]
    assert names[-1] == "RandomErasing"


def test_mixup_cutmix_collate_gives_class_probabilities(paper_recipes):
    collate = recipes.collate_function(paper_recipes["swin_s"], num_classes=5)
    images, targets = collate([(torch.rand(3, 8, 8), k % 5) for k in range(6)])
    assert images.shape == (6, 3, 8, 8) and targets.shape == (6, 5)
    assert torch.allclose(targets.sum(dim=1), torch.ones(6))
    plain = recipes.collate_function(paper_recipes["resnet50"], num_classes=5)
    assert plain([(torch.rand(3, 8, 8), 2)])[1].tolist() == [2]


def test_recipe_checks_name_the_key(paper_recipes):
    bad = dict(paper_recipes["swin_s"], lr_warmup_epochs=300)
    with pytest.raises(ConfigError, match=r"classification.models.swin_s.lr_warmup_epochs"):
        recipes.check(bad, "classification.models.swin_s")
