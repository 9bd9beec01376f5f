"""A tiny randomly initialised BLIP captioner for the smoke run and the tests.

It has BLIP's architecture in miniature (a ViT image encoder and a BERT text decoder with
cross-attention, ``BlipForConditionalGeneration``) and a ``BlipProcessor`` whose BertTokenizer
vocabulary is written from the captions it will be trained on, with BLIP's special tokens ([DEC]
starts a caption, [SEP] ends it). It is saved with ``save_pretrained`` and then loaded by the
captioning code through the same ``from_pretrained(<local dir>)`` call as the real weights.
"""

import re

from contamination.errors import DataError
from contamination.io import save_pretrained

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
BOS_TOKEN = "[DEC]"  # BLIP's decoder start token (the tokenizer's bos_token)
PATCH_SIZE = 8
WIDTH = 32


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-blip", help="build and save a tiny random BLIP captioner + processor")
    parser.add_argument("out")
    parser.add_argument("--captions", nargs="+", required=True,
                        help="index Parquet files whose captions make the vocabulary (e.g. the COCO index)")
    parser.add_argument("--prompt", default="a picture of ", help="the caption prompt; its words join the vocabulary")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_blip)


def run_tiny_blip(args) -> None:
    texts = caption_texts(args.captions) + [args.prompt]
    save_pretrained(build_tiny_blip(texts, args.seed, args.image_size), args.out, owned=True)
    print(f"tiny BLIP (seed {args.seed}, {args.image_size} px) saved to {args.out}")


def caption_texts(paths) -> list:
    import pandas as pd

    texts = []
    for path in paths:
        try:
            frame = pd.read_parquet(path, columns=["caption"])
        except (OSError, ValueError, KeyError) as error:
            raise DataError(f"cannot read captions from index {path}: {error}") from error
        texts += [caption for caption in frame["caption"] if caption]
    if not texts:
        raise DataError(f"no captions in {', '.join(map(str, paths))}")
    return texts


def vocabulary(texts) -> dict:
    """BLIP's special tokens, then every lower-case word and punctuation mark of ``texts``, sorted
    (BERT's basic tokenization: words split at whitespace and punctuation)."""
    words = set()
    for text in texts:
        words.update(re.findall(r"\w+|[^\w\s]", text.lower()))
    return {token: index for index, token in enumerate(SPECIAL_TOKENS + sorted(words - set(SPECIAL_TOKENS)))}


class TinyBlip:
    """Model and processor saved together, like a converted BLIP directory."""

    def __init__(self, model, processor):
        self.model = model
        self.processor = processor

    def save_pretrained(self, directory, safe_serialization=True) -> None:
        self.model.save_pretrained(directory, safe_serialization=safe_serialization)
        self.processor.save_pretrained(directory)


def build_tiny_blip(texts, seed: int, image_size: int = 32) -> TinyBlip:
    """The tiny captioner; the same texts and seed give the same weights (built on the CPU)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        BlipTextConfig,
        BlipVisionConfig,
    )

    if image_size % PATCH_SIZE:
        raise ValueError(f"image size {image_size} is not a multiple of the patch size {PATCH_SIZE}")
    tokenizer = BertTokenizer(vocab=vocabulary(texts), do_lower_case=True, bos_token=BOS_TOKEN)
    text_config = BlipTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=WIDTH,
        encoder_hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        # The real ids: the defaults (30522, 102) lie outside a tiny vocabulary.
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision_config = BlipVisionConfig(
        hidden_size=WIDTH,
        intermediate_size=2 * WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=PATCH_SIZE,
    )
    config = BlipConfig(
        text_config=text_config.to_dict(),
        vision_config=vision_config.to_dict(),
        projection_dim=WIDTH,
        image_text_hidden_size=WIDTH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
    )
    return TinyBlip(model, processor)
