"""What the user owns is never harmed: no dataset root, Karpathy JSON or model path is ever a
Snakemake output (so --delete-all-output, --forceall and -R cannot remove it), the synthetic
writer and the tiny model builders refuse to replace what they did not write, and every path
reaches the shell quoted, whatever characters it holds."""

import json
import shlex
from pathlib import Path

import pytest
import yaml

from contamination import config as cfg
from contamination import io as contamination_io
from contamination.__main__ import main
from contamination.errors import DataError
from contamination.smoke.synthetic import write_all
from helpers import PAPER_CONFIG, SMOKE_CONFIG, paper_config_with_empty_roots, snakemake, write_yaml
from layouts_real import CLASSES, write_class_folders, write_imagenet, write_karpathy, write_webvision
from test_synthetic import smoke_spec

# Every character the issue names: spaces, both quotes, a command substitution, a command
# separator and a non-ASCII letter. Run by a shell unquoted, it would create CANARY.
AWKWARD = """site 'single' "double" $(touch CANARY) ; é"""
CANARY = "CANARY"
SENTINEL = "SENTINEL-user-data.txt"
INDEX_TARGETS = [f"results/smoke/index/{name}.parquet" for name in ["imagenet_classes", *cfg.REAL_SOURCES]]
NO_SYNTHETIC = {"synthetic": {"enabled": False}, "models": {"build_tiny": False}}
WITH_SYNTHETIC = {"synthetic": {"enabled": True}, "models": {"build_tiny": True}}


def user_paths(config: dict) -> dict:
    """Every configured dataset root, Karpathy JSON and model path: {config key: path}."""
    paths = {f"sources.{source}.{key}": value for source, settings in config["sources"].items()
             for key, value in settings.items() if key in ("root", "karpathy_json")}
    paths.update({f"models.{key}": value for key, value in config["models"].items() if key != "build_tiny"})
    return paths


def generator_pipelines(directory: Path) -> dict:
    """Overlay giving each `tiny:` generator of the smoke config a pipeline directory of its own,
    and its DINOv2 tables and filtering encoders models.dinov2 and models.clip_vision (without
    tiny models they must be the user's)."""
    models = {key: str(directory / "models" / key) for key in ("dinov2", "clip_vision")}
    for path in models.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    generators = {}
    for name, settings in cfg.load(SMOKE_CONFIG)["generators"].items():
        if str(settings["pipeline"]).startswith("tiny:"):
            pipeline = directory / "models" / name
            pipeline.mkdir(parents=True, exist_ok=True)
            generators[name] = {"pipeline": str(pipeline)}
    return {"generators": generators, "models": models}


def overlap(path_a: Path, path_b: Path) -> bool:
    """One path is the other or lies inside it."""
    return path_a == path_b or path_a in path_b.parents or path_b in path_a.parents


# ---- effective locations -------------------------------------------------------------------


def test_synthetic_data_and_tiny_models_live_under_the_run_results():
    config = cfg.load(SMOKE_CONFIG)
    results = Path("results") / "smoke"
    for source in cfg.REAL_SOURCES:
        location = cfg.source_location(config, source)
        assert Path(location["root"]) == results / "synthetic" / source
        if source in ("coco", "flickr30k"):
            assert Path(location["karpathy_json"]).parent == Path(location["root"])
    for key in cfg.TINY_MODEL_NAMES:
        assert Path(cfg.model_location(config, key)).parent == results / "models"
    paper = cfg.load()
    assert cfg.source_location(paper, "coco") == {key: paper["sources"]["coco"][key] for key in ("root", "karpathy_json")}
    assert cfg.model_location(paper, "blip") == paper["models"]["blip"]


# ---- the writers refuse to replace what they did not write ---------------------------------


def test_synthetic_writer_refuses_a_root_it_did_not_write_and_writes_nothing(tmp_path):
    spec = smoke_spec(tmp_path / "data")
    user_root = Path(spec["roots"]["webvision"])
    (user_root / "info").mkdir(parents=True)
    (user_root / "info" / "synsets.txt").write_text("the user's own file\n")
    with pytest.raises(DataError, match=str(user_root)):
        write_all(spec)
    assert (user_root / "info" / "synsets.txt").read_text() == "the user's own file\n"
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == ["webvision"]  # no root written

    (user_root / "info" / "synsets.txt").unlink()
    (user_root / "info").rmdir()  # an empty directory is fine, and then marked as the writer's own
    write_all(spec)
    for root in spec["roots"].values():
        assert (Path(root) / contamination_io.OWNER_MARKER).is_file()
    write_all(spec)  # a root it wrote is replaced


def test_synthetic_writer_refuses_a_file_in_place_of_a_root(tmp_path):
    spec = smoke_spec(tmp_path / "data")
    Path(spec["roots"]["coco"]).parent.mkdir(parents=True)
    Path(spec["roots"]["coco"]).write_text("not a directory")
    with pytest.raises(DataError, match="already exists"):
        write_all(spec)
    assert Path(spec["roots"]["coco"]).read_text() == "not a directory"


class SavesOneFile:
    def save_pretrained(self, directory, safe_serialization=True):
        (Path(directory) / "model.safetensors").write_bytes(b"tiny")


def test_tiny_model_directories_are_marked_and_never_replace_a_users_model(tmp_path):
    ours, users = tmp_path / "tiny-sd", tmp_path / "stable-diffusion-v1-1"
    contamination_io.save_pretrained(SavesOneFile(), ours, owned=True)
    contamination_io.save_pretrained(SavesOneFile(), ours, owned=True)  # its own: replaced
    assert sorted(path.name for path in ours.iterdir()) == [contamination_io.OWNER_MARKER, "model.safetensors"]
    users.mkdir()
    (users / "model_index.json").write_text("{}")
    with pytest.raises(DataError, match=str(users)):
        contamination_io.save_pretrained(SavesOneFile(), users, owned=True)
    assert [path.name for path in users.iterdir()] == ["model_index.json"]


@pytest.mark.parametrize("verb", ["tiny-inception", "tiny-resnet50"])
def test_tiny_weight_builders_never_overwrite_an_existing_file(tmp_path, capsys, verb):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"the user's real weights")
    assert main([verb, str(weights)]) == 2
    assert weights.read_bytes() == b"the user's real weights"
    assert str(weights) in capsys.readouterr().err


# ---- no configured path is a job output, in any config ------------------------------------


def rule_names(cwd, *configfiles) -> list:
    return snakemake("--list-rules", "--configfile", *configfiles, cwd=cwd).stdout.split()


def dag_outputs(cwd, *configfiles) -> list:
    """Every output file of every job that `rule all`, or `-R` of any rule, runs (Snakemake's
    --summary, first column; --forcerun adds the jobs of the rules it names to the DAG)."""
    rules = rule_names(cwd, *configfiles)
    result = snakemake("--summary", "--configfile", *configfiles, "--forcerun", *rules, cwd=cwd)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file\t"))
    return [line.split("\t")[0] for line in lines[start + 1:] if "\t" in line]


@pytest.mark.workflow
@pytest.mark.parametrize("base", ["smoke", "paper"])
@pytest.mark.parametrize("mode", ["no_synthetic", "with_synthetic"])
def test_no_configured_dataset_or_model_path_is_an_output_of_the_whole_dag(tmp_path, base, mode):
    site = paper_config_with_empty_roots(tmp_path / AWKWARD)
    if base == "smoke":  # the site's paths only, at the smoke run's sizes
        overlay = yaml.safe_load(site.read_text())
        del overlay["sources"]["imagenet"]["num_classes"], overlay["sources"]["coco"]["train_images"]
        write_yaml(site, overlay)
    switches = NO_SYNTHETIC if mode == "no_synthetic" else WITH_SYNTHETIC
    if base == "smoke" and mode == "no_synthetic":
        pipelines = generator_pipelines(tmp_path / AWKWARD)
        switches = {**switches, **pipelines, "models": {**switches["models"], **pipelines["models"]}}
    switches = write_yaml(tmp_path / "switches.yaml", switches)
    configfiles = [SMOKE_CONFIG if base == "smoke" else PAPER_CONFIG, site, switches]
    config = cfg.load(*configfiles)
    outputs = [(tmp_path / output).resolve() for output in dag_outputs(tmp_path, *configfiles)]
    assert len(outputs) > 100 and any("index" in output.parts for output in outputs)
    for key, path in cfg.user_paths(config).items():
        path = (tmp_path / path).resolve()
        assert path.exists()
        clashes = [str(output) for output in outputs if overlap(output, path)]
        assert not clashes, f"{key} ({path}) would be written or deleted by the workflow: {clashes[:3]}"


@pytest.mark.workflow
def test_the_smoke_config_alone_writes_nothing_at_its_configured_paths(tmp_path):
    config = cfg.load(SMOKE_CONFIG)
    outputs = [(tmp_path / output).resolve() for output in dag_outputs(tmp_path, SMOKE_CONFIG)]
    for key, path in user_paths(config).items():
        assert not [output for output in outputs if overlap(output, (tmp_path / path).resolve())], key


# ---- real runs: sentinels survive ---------------------------------------------------------


def write_site(directory: Path) -> tuple:
    """Tiny real layouts of every source and stand-ins for every model in ``directory``, each
    root with a sentinel file. Returns (overlay with their paths, {file: bytes it must keep})."""
    data, models = directory / "data", directory / "models"
    wnids = [wnid for wnid, _, _ in CLASSES]
    write_imagenet(data / "imagenet", "flat", train_per_class=1, val_per_class=1)
    # Each holds exactly its official classes among the four (goldfish: R, African elephant: A).
    write_class_folders(data / "imagenet_a", [wnids[3]])
    write_class_folders(data / "imagenet_r", [wnids[1]])
    write_webvision(data / "webvision", wnids, google=[("google/q0001/000000.jpg", 0)],
                    flickr=[("flickr/q0002/000000.jpg", 1)], val=[("val000001.jpg", 2)])
    coco = [{"filepath": "train2014", "filename": f"COCO_train2014_{n:012d}.jpg", "cocoid": n,
             "split": split, "captions": [f"a caption {n} {j}" for j in range(5)]}
            for n, split in enumerate(["train", "val", "test"])]
    write_karpathy(data / "coco", data / "coco" / "dataset_coco.json", coco, with_filepath=True)
    flickr = [{"filename": f"{1000 + n}.jpg", "split": split, "captions": [f"words {n} {j}" for j in range(5)]}
              for n, split in enumerate(["train", "val", "test"])]
    write_karpathy(data / "flickr30k", data / "flickr30k" / "dataset_flickr30k.json", flickr, with_filepath=False)
    sources = {source: {"root": str(data / source)} for source in cfg.REAL_SOURCES}
    sources["coco"]["karpathy_json"] = str(data / "coco" / "dataset_coco.json")
    sources["flickr30k"]["karpathy_json"] = str(data / "flickr30k" / "dataset_flickr30k.json")
    for settings in sources.values():
        (Path(settings["root"]) / SENTINEL).write_text("the user's data\n")
    model_paths = {"stable_diffusion": models / "sd", "blip": models / "blip",
                   "resnet50_detector": models / "resnet50.pth", "inception": models / "inception.pth"}
    for path in model_paths.values():
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("the user's weights\n")
        else:
            path.mkdir(parents=True)
            (path / SENTINEL).write_text("the user's model\n")
    overlay = {"sources": sources, "models": {key: str(path) for key, path in model_paths.items()}}
    guarded = [Path(settings["root"]) / SENTINEL for settings in sources.values()]
    guarded += [Path(sources[source]["karpathy_json"]) for source in ("coco", "flickr30k")]
    guarded += [path if path.suffix else path / SENTINEL for path in model_paths.values()]
    return overlay, {path: path.read_bytes() for path in guarded}


def assert_intact(guarded: dict, tmp_path: Path, step: str) -> None:
    for path, content in guarded.items():
        assert path.is_file() and path.read_bytes() == content, f"{step}: {path} was deleted or changed"
    assert not [str(path) for path in tmp_path.rglob(CANARY) if path.name == CANARY], f"{step}: a $(...) ran"


@pytest.mark.workflow
@pytest.mark.parametrize("switches", [NO_SYNTHETIC, WITH_SYNTHETIC], ids=["no_synthetic", "with_synthetic"])
def test_sentinels_survive_forceall_forcerun_and_delete_all_output(tmp_path, switches):
    overlay, guarded = write_site(tmp_path / AWKWARD)
    pipelines = generator_pipelines(tmp_path / AWKWARD) if not switches["models"]["build_tiny"] else {}
    site = write_yaml(tmp_path / "site.yaml", {**overlay, **pipelines, "synthetic": switches["synthetic"],
                                                "models": {**overlay["models"], **pipelines.get("models", {}),
                                                           **switches["models"]}})
    arguments = ["--configfile", SMOKE_CONFIG, site]
    rules = rule_names(tmp_path, SMOKE_CONFIG, site)
    # -R of a rule adds all its jobs to the run: here those that make the indexes (every rule's
    # jobs, in the whole DAG, are checked by test_no_configured_..._of_the_whole_dag).
    cheap_rules = [rule for rule in rules if rule in ("synthetic_sources", "imagenet_classes", "index_source")]

    run = snakemake("--cores", "2", "--forceall", *INDEX_TARGETS, *arguments, cwd=tmp_path, check=False)
    assert_intact(guarded, tmp_path, "--forceall")
    assert run.returncode == 0, run.stderr
    assert all((tmp_path / target).is_file() for target in INDEX_TARGETS)

    run = snakemake(*INDEX_TARGETS, "--cores", "2", *arguments, "--forcerun", *cheap_rules, cwd=tmp_path, check=False)
    assert_intact(guarded, tmp_path, "--forcerun")
    assert run.returncode == 0, run.stderr

    run = snakemake("--delete-all-output", *arguments, cwd=tmp_path, check=False)
    assert_intact(guarded, tmp_path, "--delete-all-output")
    assert run.returncode == 0, run.stderr
    assert not any((tmp_path / target).exists() for target in INDEX_TARGETS)  # it did delete its own
    assert not (tmp_path / "results" / "smoke" / "synthetic" / "imagenet").exists()


# ---- every path reaches the shell as one quoted argument ----------------------------------


@pytest.mark.workflow
def test_awkward_paths_reach_every_command_as_one_argument(tmp_path):
    site = paper_config_with_empty_roots(tmp_path / AWKWARD)
    config = cfg.load(site)
    output = snakemake("-n", "-p", "--forceall", "--configfile", site, cwd=tmp_path).stdout
    commands = [line.split("Shell command: ", 1)[1] for line in output.splitlines() if line.startswith("Shell command: ")]
    assert len(commands) > 3000
    paths = set(user_paths(config).values())
    assert all(CANARY in path for path in paths)
    passed, broken = set(), []
    for command in commands:
        for argument in shlex.split(command):
            if argument in paths:
                passed.add(argument)
            elif CANARY in argument and not is_json(argument):  # only a JSON spec may hold a path
                broken.append((argument, command))
    assert not broken, f"a path split or mangled on its way to the shell: {broken[0]}"
    assert passed == paths  # each one reaches some job, whole
    assert not list(tmp_path.rglob(CANARY))


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
