"""Tiny randomly initialised text-to-image pipelines for the smoke run and the tests.

``tiny-sd`` has the architecture of Stable Diffusion v1 in miniature (CLIP text encoder, a UNet
with cross-attention, a KL autoencoder with 4 blocks so latents are 8x smaller than images, and
PLMS sampling). ``tiny-pipeline <family>`` builds the other families (TINY_FAMILIES): ``sdxl``
(StableDiffusionXLPipeline: two CLIP text encoders, the second with a projection, and a UNet
conditioned on the pooled text and the image size) and ``pixart_sigma`` (PixArtSigmaPipeline: a
T5 encoder and a diffusion transformer). Each is saved with ``save_pretrained`` and loaded by the
generation code through the same ``from_pretrained(<local dir>)`` call as real weights. Nothing is
downloaded: the tokenizers are built in code (CLIP's from the byte-level alphabet, T5's as a
character-level unigram model).
"""

from contamination.io import save_pretrained

MAX_PROMPT_TOKENS = 77  # CLIP's context length; the pipeline pads every prompt to it
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
WORD_END = "</w>"


T5_SPACE = "\u2581"  # SentencePiece's word-start marker


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-sd", help="build and save a tiny random StableDiffusionPipeline")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_sd, family="sd")

    parser = subparsers.add_parser("tiny-pipeline", help="build and save a tiny random pipeline of one family")
    parser.add_argument("family", choices=sorted(TINY_FAMILIES))
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_sd)


def run_tiny_sd(args) -> None:
    save_pretrained(TINY_FAMILIES[args.family](args.seed), args.out, owned=True)
    print(f"tiny {args.family} pipeline (seed {args.seed}) saved to {args.out}")


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
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer = build_tokenizer()
    text_width = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = build_clip_text_encoder(CLIPTextModel, tokenizer, text_width)
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
        vae = build_vae()
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


def build_vae():
    """A KL autoencoder with four blocks, like SD's: images are 2**3 = 8 times larger than latents."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
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


def build_clip_text_encoder(model_class, tokenizer, width: int, **options):
    from transformers import CLIPTextConfig

    return model_class(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            intermediate_size=2 * width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=MAX_PROMPT_TOKENS,
            # The real ids: an eos id of 2 makes CLIP pool at argmax(ids), wrong for this vocab.
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
    )


def build_sdxl_pipeline(seed: int):
    """A tiny StableDiffusionXLPipeline: two CLIP text encoders (the second projects its pooled
    output), their hidden states concatenated as the UNet's context, and the UNet's extra
    conditioning on the pooled text and the six size numbers (SDXL's "text_time" embedding);
    Euler sampling as SDXL's scheduler config has it."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_tokenizer()
    text_width, time_width = 16, 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = build_clip_text_encoder(CLIPTextModel, tokenizer, text_width)
        text_encoder_2 = build_clip_text_encoder(CLIPTextModelWithProjection, tokenizer, text_width,
                                                 projection_dim=text_width)
        unet = UNet2DConditionModel(
            sample_size=8,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * text_width,
            attention_head_dim=8,
            norm_num_groups=8,
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_width,
            projection_class_embeddings_input_dim=6 * time_width + text_width,
        )
        vae = build_vae()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       num_train_timesteps=1000, steps_offset=1, timestep_spacing="leading")
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=build_tokenizer(), unet=unet, scheduler=scheduler)


def build_t5_tokenizer():
    """A character-level T5 tokenizer: a unigram model over printable ASCII and the word-start
    marker, with T5's pad, eos and unk tokens (other characters become unk)."""
    from transformers import T5Tokenizer

    characters = [chr(code) for code in range(ord("!"), ord("~") + 1)]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), (T5_SPACE, -1.0)]
    vocab += [(character, -2.0) for character in characters]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_pixart_sigma_pipeline(seed: int):
    """A tiny PixArtSigmaPipeline: a T5 encoder, a DiT with adaLN-single conditioning and
    cross-attention to the text, predicting noise and variance (8 output channels), DPM-Solver++
    sampling as PixArt-Sigma's scheduler config has it. Its sample size is no PixArt resolution
    bin: generate with call argument use_resolution_binning: false."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_t5_tokenizer()
    text_width = 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=text_width, d_kv=8, d_ff=64,
                                               num_layers=2, num_heads=4, pad_token_id=tokenizer.pad_token_id,
                                               eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0))
        transformer = PixArtTransformer2DModel(
            sample_size=8,
            num_layers=2,
            patch_size=2,
            attention_head_dim=8,
            num_attention_heads=2,
            caption_channels=text_width,
            in_channels=4,
            cross_attention_dim=16,
            out_channels=8,
            attention_bias=True,
            activation_fn="gelu-approximate",
            num_embeds_ada_norm=1000,
            norm_type="ada_norm_single",
            norm_elementwise_affine=False,
            norm_eps=1e-6,
        )
        vae = build_vae()
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                                            algorithm_type="dpmsolver++", solver_order=2)
    return PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                               scheduler=scheduler)


# The families `tiny-pipeline` builds: Stable Diffusion 1.x, SDXL and PixArt-Sigma.
TINY_FAMILIES = {"sd": build_pipeline, "sdxl": build_sdxl_pipeline, "pixart_sigma": build_pixart_sigma_pipeline}
