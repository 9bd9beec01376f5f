"""Convert an original BLIP checkpoint (salesforce/BLIP, LAVIS) to a transformers directory.

The paper fine-tunes BLIP base *pre-trained* with CapFilt-L (``model_base_capfilt_large.pth``,
the ``pretrained`` weights of LAVIS's caption_coco_ft), not a COCO-finetuned captioner, and no
transformers release of those weights exists. This command does what BLIP/LAVIS do when they
build the captioner from that checkpoint, writing the result with ``save_pretrained``:

- keep the image encoder (``visual_encoder.*``) and the text decoder (``text_decoder.*``); the
  checkpoint's other parts (text encoder, ITM head, momentum encoders, queues) are not used;
- interpolate the ViT position embeddings bicubically from the pre-training grid (224 px) to the
  fine-tuning image size (384 px), as BLIP's ``interpolate_pos_embed``;
- rename the ViT keys to transformers' (the same map as transformers'
  convert_blip_original_pytorch_to_hf.py); the text decoder's names already match;
- the tokenizer is bert-base-uncased's vocabulary plus BLIP's [DEC] (bos, id 30522) and [ENC]
  (30523), added in that order as BLIP's ``init_tokenizer`` does; the image processor resizes
  to the image size with bicubic resampling and CLIP's mean and std, as BLIP.

Sizes are read from the checkpoint (widths, depths); attention heads are width / 64 (ViT and
BERT base and large). Every weight of the transformers model must come from the checkpoint.
"""

import pickle
import re
from pathlib import Path

from contamination.errors import DataError
from contamination.data import load_image
from contamination.experiments.caption import eval_transform
from contamination.io import save_pretrained
from contamination.smoke.tiny_blip import TinyBlip

HEAD_WIDTH = 64
VISION_PREFIX = "visual_encoder."
TEXT_PREFIX = "text_decoder."
# (pattern, replacement) applied in order to the ViT keys after the prefix is replaced.
VISION_RENAMES = [
    (r"^blocks\.", "encoder.layers."),
    (r"\.norm1\.", ".layer_norm1."),
    (r"\.norm2\.", ".layer_norm2."),
    (r"\.attn\.proj\.", ".self_attn.projection."),
    (r"\.attn\.qkv\.", ".self_attn.qkv."),
    (r"^norm\.", "post_layernorm."),
    (r"^patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"^pos_embed$", "embeddings.position_embedding"),
    (r"^cls_token$", "embeddings.class_embedding"),
]
# Present in transformers' model but tied to other weights (filled by tie_weights on load).
TIED_KEYS = {"text_decoder.cls.predictions.decoder.weight", "text_decoder.cls.predictions.decoder.bias"}


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert-blip", help="convert an original BLIP checkpoint (.pth) to a transformers BLIP directory"
    )
    parser.add_argument("out", help="directory to write (BlipForConditionalGeneration + BlipProcessor)")
    parser.add_argument("--checkpoint", required=True, help="e.g. model_base_capfilt_large.pth")
    parser.add_argument("--vocab", required=True, help="bert-base-uncased vocab.txt")
    parser.add_argument("--image-size", type=int, default=384)
    parser.add_argument("--check-image", help="print the converted model's greedy caption of this image "
                                              "(BLIP's demo.jpg: 'a woman sitting on the beach with her dog')")
    parser.set_defaults(run=run_convert_blip)


def run_convert_blip(args) -> None:
    model, processor = convert_blip(args.checkpoint, args.vocab, args.image_size)
    save_pretrained(TinyBlip(model, processor), args.out)
    print(f"converted {args.checkpoint} ({sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{args.image_size} px) to {args.out}")
    if args.check_image:
        print(f"{args.check_image}: {greedy_caption(model, processor, args.check_image, args.image_size)!r}")


def greedy_caption(model, processor, image_path, image_size: int, prompt: str = "a picture of ") -> str:
    """The caption after ``prompt`` with greedy decoding (transformers' conversion check)."""
    import torch

    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    transform = eval_transform({"image_size": image_size}, image_processor.image_mean, image_processor.image_std)
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        output = model.generate(pixel_values=transform(load_image(str(image_path)))[None], input_ids=prompt_ids,
                                num_beams=1, do_sample=False, max_length=20)
    return tokenizer.decode(output[0, prompt_ids.shape[1] - 1 :], skip_special_tokens=True)


def vision_key(key: str) -> str:
    name = key[len(VISION_PREFIX):]
    for pattern, replacement in VISION_RENAMES:
        name = re.sub(pattern, replacement, name)
    return "vision_model." + name


def interpolate_position_embedding(embedding, grid: int):
    """(1, 1 + n*n, width) -> (1, 1 + grid*grid, width): the class token's embedding is kept,
    the patch grid resized bicubically (BLIP's interpolate_pos_embed)."""
    import torch

    width = embedding.shape[-1]
    old = round((embedding.shape[1] - 1) ** 0.5)
    if old == grid:
        return embedding
    patches = embedding[:, 1:].reshape(1, old, old, width).permute(0, 3, 1, 2)
    patches = torch.nn.functional.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([embedding[:, :1], patches.permute(0, 2, 3, 1).flatten(1, 2).to(embedding.dtype)], dim=1)


def read_checkpoint(path) -> dict:
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise DataError(f"cannot read BLIP checkpoint {path}: {error}") from error
    state = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict) or f"{VISION_PREFIX}pos_embed" not in state or not any(
        key.startswith(TEXT_PREFIX) for key in state
    ):
        raise DataError(f"{path}: not a BLIP checkpoint with a visual_encoder and a text_decoder")
    return state


def read_vocab(path) -> dict:
    try:
        tokens = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataError(f"cannot read vocabulary {path}: {error}") from error
    return {token: index for index, token in enumerate(tokens)}


def blip_config(state: dict, vocab_size: int, image_size: int):
    from transformers import BlipConfig

    def depth(prefix):
        pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
        return 1 + max(int(match.group(1)) for key in state if (match := pattern.match(key)))

    vision_width = state[f"{VISION_PREFIX}cls_token"].shape[-1]
    patch = state[f"{VISION_PREFIX}patch_embed.proj.weight"]
    text_width = state[f"{TEXT_PREFIX}bert.embeddings.word_embeddings.weight"].shape[-1]
    text = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "encoder_hidden_size": vision_width,
        "intermediate_size": state[f"{TEXT_PREFIX}bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "num_hidden_layers": depth(f"{TEXT_PREFIX}bert.encoder.layer."),
        "num_attention_heads": text_width // HEAD_WIDTH,
        "max_position_embeddings": state[f"{TEXT_PREFIX}bert.embeddings.position_embeddings.weight"].shape[0],
        "layer_norm_eps": 1e-12,
        "bos_token_id": vocab_size - 2,  # [DEC]
        "pad_token_id": 0,
        "sep_token_id": 102,
        "eos_token_id": 102,
    }
    vision = {
        "hidden_size": vision_width,
        "intermediate_size": state[f"{VISION_PREFIX}blocks.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": depth(f"{VISION_PREFIX}blocks."),
        "num_attention_heads": vision_width // HEAD_WIDTH,
        "image_size": image_size,
        "patch_size": patch.shape[-1],
        "layer_norm_eps": 1e-6,  # BLIP's ViT
    }
    return BlipConfig(text_config=text, vision_config=vision)


def build_tokenizer(vocab: dict):
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def convert_blip(checkpoint, vocab_path, image_size: int = 384):
    """``(BlipForConditionalGeneration, BlipProcessor)`` with every weight from ``checkpoint``."""
    from transformers import BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    state = read_checkpoint(checkpoint)
    tokenizer = build_tokenizer(read_vocab(vocab_path))
    config = blip_config(state, len(tokenizer), image_size)
    if tokenizer.bos_token_id != config.text_config.bos_token_id or tokenizer.sep_token_id != 102:
        raise DataError(f"{vocab_path}: not bert-base-uncased's vocabulary ([SEP] is {tokenizer.sep_token_id}, not 102)")
    grid = image_size // config.vision_config.patch_size
    weights = {}
    for key, value in state.items():
        if key.startswith(VISION_PREFIX):
            name = vision_key(key)
            weights[name] = interpolate_position_embedding(value, grid) if name.endswith("position_embedding") else value
        elif key.startswith(TEXT_PREFIX) and not key.endswith(".position_ids"):  # a constant buffer
            weights[key] = value
    model = BlipForConditionalGeneration(config)
    expected = model.state_dict()
    wrong_shapes = [key for key in weights if key in expected and weights[key].shape != expected[key].shape]
    if wrong_shapes:
        raise DataError(f"{checkpoint}: weights of unexpected shape: {', '.join(wrong_shapes[:5])}")
    result = model.load_state_dict(weights, strict=False)
    missing = sorted(set(result.missing_keys) - TIED_KEYS)
    if missing or result.unexpected_keys:
        raise DataError(f"{checkpoint}: cannot fill the transformers BLIP model; missing {missing[:5]}, "
                        f"unknown {sorted(result.unexpected_keys)[:5]}")
    model.tie_weights()
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    return model.eval(), processor
