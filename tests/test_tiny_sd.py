"""The tiny Stable Diffusion pipeline: saved, loaded back through from_pretrained, deterministic."""

import pytest
import torch

from contamination.smoke import tiny_sd
from contamination.io import save_pretrained
from contamination.__main__ import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny-sd"
    assert main(["tiny-sd", str(out), "--seed", "0"]) == 0
    return out


def files_of(directory):
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {path.relative_to(directory).as_posix(): path.read_bytes() for path in files}


def test_saved_pipeline_loads_through_from_pretrained_and_generates(saved):
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    pipeline = StableDiffusionPipeline.from_pretrained(saved, local_files_only=True)

    assert pipeline.safety_checker is None and pipeline.feature_extractor is None
    assert pipeline.vae_scale_factor == 8
    assert isinstance(pipeline.scheduler, PNDMScheduler)
    plms = {"skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1, "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012}
    assert {key: pipeline.scheduler.config[key] for key in plms} == plms
    assert pipeline.tokenizer.model_max_length == 77
    assert pipeline.text_encoder.config.eos_token_id == pipeline.tokenizer.eos_token_id
    pipeline.set_progress_bar_config(disable=True)
    image = pipeline("A photo of tench", height=16, width=24, num_inference_steps=2,
                     generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (24, 16)


def test_same_seed_gives_identical_files_and_another_seed_differs(saved, tmp_path):
    again, other = tmp_path / "again", tmp_path / "other"
    save_pretrained(tiny_sd.build_pipeline(0), again, owned=True)  # as the tiny-sd command
    save_pretrained(tiny_sd.build_pipeline(1), other, owned=True)

    reference = files_of(saved)
    assert files_of(again) == reference
    other_files = files_of(other)
    assert other_files.keys() == reference.keys()
    unet_weights = "unet/diffusion_pytorch_model.safetensors"
    assert other_files[unet_weights] != reference[unet_weights]


def test_saving_over_an_existing_directory_replaces_it_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "tiny-sd"
    out.mkdir()
    (out / "stale.txt").write_text("from an older build")
    save_pretrained(tiny_sd.build_pipeline(0), out)

    assert not (out / "stale.txt").exists() and (out / "model_index.json").is_file()
    assert [path.name for path in tmp_path.iterdir()] == ["tiny-sd"]


def test_tokenizer_covers_every_byte_without_unknown_tokens():
    tokenizer = tiny_sd.build_tokenizer()
    ids = tokenizer("Café, naïve 🐘 piano!", padding="max_length", max_length=77).input_ids

    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id
    text_ids = ids[1: ids.index(tokenizer.eos_token_id)]
    assert len(text_ids) > 10 and tokenizer.eos_token_id not in text_ids  # eos doubles as unk
    # CLIP lower-cases and makes punctuation a word of its own.
    assert tokenizer.decode(text_ids) == "café , naïve 🐘 piano !"
