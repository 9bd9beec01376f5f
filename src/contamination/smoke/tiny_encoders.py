"""The smoke run's random stand-ins for the frozen image encoders of the filtering detectors
(config models.clip_vision, models.dinov2): a CLIP vision tower with its projection, or a DINOv2,
of 2 blocks 32 wide on 8 px patches, saved with an image processor like the real directories' so
that encoders.load_encoder reads them through the same ``from_pretrained`` calls.

Command: ``tiny-encoder`` (smoke.smk).
"""

from contamination.experiments.encoders import MODEL_CLASSES

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # DINOv2's processor


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-encoder", help="save a tiny random CLIP vision tower or DINOv2 with its "
                                                        "image processor (smoke run)")
    parser.add_argument("out", help="model directory")
    parser.add_argument("--kind", required=True, choices=sorted(MODEL_CLASSES))
    parser.add_argument("--image-size", type=int, default=32, help="crop size of the processor and the model")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_encoder)


def run_tiny_encoder(args) -> None:
    from transformers.utils import logging as transformers_logging

    from contamination.io import owned_directory

    model, processor = build_tiny_encoder(args.kind, args.image_size, args.seed)
    transformers_logging.disable_progress_bar()
    with owned_directory(args.out) as directory:  # never over a model a user points it at
        model.save_pretrained(directory, safe_serialization=True)
        processor.save_pretrained(directory)
    print(f"tiny {args.kind} encoder (seed {args.seed}, {args.image_size} px) saved to {args.out}")


def build_tiny_encoder(kind: str, image_size: int, seed: int) -> tuple:
    """(model, image processor): the same kind, size and seed give the same weights. Processors as
    the real ones: CLIP resizes the short side to the crop size, DINOv2 to 8/7 of it (256 for 224)."""
    import torch
    from transformers import (BitImageProcessor, CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection,
                              Dinov2Config, Dinov2Model)

    layers = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": image_size,
              "patch_size": 8}
    crop = {"height": image_size, "width": image_size}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "clip":
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(intermediate_size=64, projection_dim=16, **layers))
            processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=crop)
        else:
            model = Dinov2Model(Dinov2Config(mlp_ratio=2, **layers))
            processor = BitImageProcessor(size={"shortest_edge": round(image_size * 8 / 7)}, crop_size=crop,
                                          image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD)
    return model, processor
