"""convert-blip: an original BLIP checkpoint becomes a transformers directory the captioner loads."""

import re

import pytest
import torch

from contamination import config as cfg
from contamination.experiments.blip_weights import convert_blip, interpolate_position_embedding
from contamination.experiments.caption import load_blip
from contamination.errors import DataError
from contamination.smoke.tiny_blip import TinyBlip
from contamination.io import save_pretrained
from helpers import SMOKE_CONFIG

# transformers name -> BLIP name for the ViT (BLIP's models/vit.py), the inverse of the converter.
TO_BLIP = [
    (r"^vision_model\.embeddings\.class_embedding$", "visual_encoder.cls_token"),
    (r"^vision_model\.embeddings\.position_embedding$", "visual_encoder.pos_embed"),
    (r"^vision_model\.embeddings\.patch_embedding\.", "visual_encoder.patch_embed.proj."),
    (r"^vision_model\.post_layernorm\.", "visual_encoder.norm."),
    (r"^vision_model\.encoder\.layers\.", "visual_encoder.blocks."),
    (r"\.layer_norm1\.", ".norm1."),
    (r"\.layer_norm2\.", ".norm2."),
    (r"\.self_attn\.qkv\.", ".attn.qkv."),
    (r"\.self_attn\.projection\.", ".attn.proj."),
]
WIDTH = 64  # one attention head of 64, as the converter assumes


def bert_vocab():
    """bert-base-uncased's layout in miniature: [PAD] 0, [unused*], [UNK] 100 ... [SEP] 102."""
    return ["[PAD]"] + [f"[unused{n}]" for n in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                              "a", "picture", "of", "cat"]


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory):
    """A tiny model in BLIP's checkpoint format, pre-trained at 16 px (a 2x2 patch grid)."""
    from transformers import BlipConfig, BlipForConditionalGeneration

    directory = tmp_path_factory.mktemp("blip")
    vocab = bert_vocab()
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    text = dict(vocab_size=len(vocab) + 2, hidden_size=WIDTH, encoder_hidden_size=WIDTH, intermediate_size=96,
                num_hidden_layers=2, num_attention_heads=1, max_position_embeddings=40, bos_token_id=len(vocab),
                pad_token_id=0, sep_token_id=102, eos_token_id=102)
    vision = dict(hidden_size=WIDTH, intermediate_size=80, num_hidden_layers=3, num_attention_heads=1,
                  image_size=16, patch_size=8)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision))
    state, names = {}, {}
    for name, value in model.state_dict().items():
        original = name
        for pattern, replacement in TO_BLIP:
            original = re.sub(pattern, replacement, original)
        state[original], names[name] = value.clone(), original
    state["text_decoder.bert.embeddings.position_ids"] = torch.arange(40).expand(1, -1)
    state["text_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(3, WIDTH)  # not the captioner's
    state["itm_head.weight"] = torch.zeros(2, WIDTH)
    torch.save({"model": state}, directory / "model_base_capfilt_large.pth")
    return directory / "model_base_capfilt_large.pth", directory / "vocab.txt", state, names


def test_every_weight_comes_from_the_checkpoint(original_checkpoint):
    checkpoint, vocab, state, names = original_checkpoint
    model, processor = convert_blip(checkpoint, vocab, image_size=32)
    converted = model.state_dict()
    assert names["vision_model.encoder.layers.2.self_attn.projection.weight"] == "visual_encoder.blocks.2.attn.proj.weight"
    assert converted.keys() == names.keys()
    for name, original in names.items():
        if name != "vision_model.embeddings.position_embedding":
            assert torch.equal(converted[name], state[original]), name
    # 2x2 pre-training grid -> 4x4 at 32 px; the class token's embedding is kept.
    position = converted["vision_model.embeddings.position_embedding"]
    assert position.shape == (1, 17, WIDTH)
    assert torch.equal(position[:, 0], state["visual_encoder.pos_embed"][:, 0])
    assert model.config.vision_config.num_hidden_layers == 3 and model.config.text_config.num_hidden_layers == 2
    assert model.config.vision_config.layer_norm_eps == 1e-6
    tokenizer = processor.tokenizer
    assert (tokenizer.bos_token, tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids("[ENC]")) == ("[DEC]", 108, 109)
    assert processor.image_processor.size == {"height": 32, "width": 32}


def test_the_converted_directory_loads_and_captions(original_checkpoint, tmp_path):
    checkpoint, vocab, _, _ = original_checkpoint
    save_pretrained(TinyBlip(*convert_blip(checkpoint, vocab, image_size=32)), tmp_path / "blip")
    settings = dict(cfg.load(SMOKE_CONFIG)["captioning"], image_size=32)
    model, processor = load_blip(tmp_path / "blip", settings)
    prompt = processor.tokenizer("a picture of", return_tensors="pt").input_ids
    output = model.eval().generate(pixel_values=torch.zeros(1, 3, 32, 32), input_ids=prompt, num_beams=3,
                                   max_length=8, min_length=5)
    assert output[0, :4].tolist() == [108] + prompt[0, 1:-1].tolist()


def test_interpolation_keeps_a_grid_of_the_same_size():
    embedding = torch.randn(1, 1 + 9, 4)
    assert interpolate_position_embedding(embedding, 3) is embedding
    assert interpolate_position_embedding(embedding, 5).shape == (1, 26, 4)


def test_a_file_that_is_not_a_blip_checkpoint_is_named(tmp_path, original_checkpoint):
    _, vocab, _, _ = original_checkpoint
    torch.save({"model": {"weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(DataError, match="other.pth: not a BLIP checkpoint"):
        convert_blip(tmp_path / "other.pth", vocab)


@pytest.mark.parametrize("change, message", [
    ("remove", r"missing \['vision_model.post_layernorm.bias'\]"),
    ("add", r"unknown \['text_decoder.bert.pooler.extra'\]"),
])
def test_a_missing_or_unknown_captioner_weight_fails_naming_the_key(original_checkpoint, tmp_path, change, message):
    _, vocab, state, _ = original_checkpoint
    changed = dict(state)
    if change == "remove":
        del changed["visual_encoder.norm.bias"]
    else:
        changed["text_decoder.bert.pooler.extra"] = torch.zeros(2)
    torch.save({"model": changed}, tmp_path / "changed.pth")
    with pytest.raises(DataError, match=f"changed.pth: cannot fill the transformers BLIP model.*{message}"):
        convert_blip(tmp_path / "changed.pth", vocab)


def test_the_cli_converts_and_captions_a_check_image(original_checkpoint, tmp_path):
    from PIL import Image

    from helpers import cli

    checkpoint, vocab, _, _ = original_checkpoint
    Image.new("RGB", (40, 30), (90, 120, 200)).save(tmp_path / "demo.jpg")
    result = cli("convert-blip", tmp_path / "blip", "--checkpoint", checkpoint, "--vocab", vocab,
                 "--image-size", 32, "--check-image", tmp_path / "demo.jpg")
    assert (tmp_path / "blip" / "config.json").is_file() and (tmp_path / "blip" / "processor_config.json").is_file()
    assert f"{tmp_path / 'demo.jpg'}: '" in result.stdout
