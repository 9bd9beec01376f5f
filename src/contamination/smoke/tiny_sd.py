"""A tiny randomly initialised Stable Diffusion pipeline for the smoke run and the tests.

It has the architecture of Stable Diffusion v1 in miniature (CLIP text encoder, a UNet with
cross-attention, a KL autoencoder with 4 blocks so latents are 8x smaller than images, and
PLMS sampling), is saved with ``save_pretrained`` and then loaded by the generation code through
the same ``StableDiffusionPipeline.from_pretrained(<local dir>)`` call as the real weights.
Nothing is downloaded: the tokenizer is built in code from the byte-level alphabet.
"""

from contamination.io import save_pretrained

MAX_PROMPT_TOKENS = 77  # CLIP's context length; the pipeline pads every prompt to it
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-sd", help="build and save a tiny random StableDiffusionPipeline")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_sd)


def run_tiny_sd(args) -> None:
    save_pretrained(build_pipeline(args.seed), args.out, owned=True)
    print(f"tiny Stable Diffusion (seed {args.seed}) saved to {args.out}")


def byte_alphabet() -> list:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255 (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(byte) if byte in printable else chr(next(extra)) for byte in range(256)]


def build_tokenizer():
    """A character-level CLIP tokenizer: every byte, alone or ending a word, and the two specials.

    Without merges each character is one token, so prompts longer than about 75 characters are
    truncated; a random text encoder gains nothing from a real vocabulary.
    """
    from transformers import CLIPTokenizer

    alphabet = byte_alphabet()
    tokens = alphabet + [character + WORD_END for character in alphabet] + [START_TOKEN, END_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=MAX_PROMPT_TOKENS)


def build_pipeline(seed: int):
    """The tiny pipeline; the same seed gives the same weights (built on the CPU)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer()
    text_width = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=text_width,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=MAX_PROMPT_TOKENS,
                # The real ids: an eos id of 2 makes CLIP pool at argmax(ids), wrong for this vocab.
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=text_width,
            attention_head_dim=8,
            norm_num_groups=8,
        )
        # Four blocks, like SD's autoencoder: images are 2**3 = 8 times larger than latents.
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=(8, 8, 16, 16),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            norm_num_groups=8,
            sample_size=64,
        )
    # PLMS as in the CompVis sampler Stable Diffusion v1 was released with (its scheduler config).
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        skip_prk_steps=True,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
