"""Frozen image encoders whose features the stronger filtering detectors probe (filtering.py), as
UnivFD (Ojha et al., CVPR 2023) probes CLIP ViT-L/14: loaded from a local transformers directory,
never downloaded.

- ``clip``: ``CLIPVisionModelWithProjection`` from a CLIP directory (config ``models.clip_vision``,
  e.g. openai/clip-vit-large-patch14; the text tower's weights in it are not read). Features: the
  projected image embedding (768-d for ViT-L/14), what CLIP's ``encode_image`` returns and UnivFD
  trains its linear probe on.
- ``dinov2``: ``Dinov2Model`` (config ``models.dinov2``, e.g. facebook/dinov2-large). Features: the
  pooled output, the class token after the final layer norm (1,024-d for ViT-L/14).

Images are prepared by the image processor saved with the model (its resize, centre crop and
normalisation), so a model is read as it was trained to see images.
"""

from pathlib import Path

from contamination.errors import ConfigError, DataError

MODEL_CLASSES = {"clip": "CLIPVisionModelWithProjection", "dinov2": "Dinov2Model"}
MODEL_KEYS = {"clip": "clip_vision", "dinov2": "dinov2"}  # config `models`


def load_encoder(kind: str, path) -> tuple:
    """(model, transform, feature width) of encoder ``kind`` saved at ``path``: model maps a batch
    of transformed images (B, 3, H, W) to their features (B, width); transform maps a PIL image to
    its tensor. A ConfigError or DataError naming the config key if the directory holds no such
    model or leaves some of its weights unfilled."""
    import transformers
    from transformers import AutoImageProcessor

    key, directory = f"models.{MODEL_KEYS[kind]}", Path(path)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{key}: '{directory}' holds no saved transformers model (config.json)")
    model_class = getattr(transformers, MODEL_CLASSES[kind])
    try:
        model, loading = model_class.from_pretrained(directory, local_files_only=True, output_loading_info=True)
        processor = AutoImageProcessor.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(f"{key}: cannot load a {MODEL_CLASSES[kind]} and its image processor from '{directory}': "
                        f"{error}") from error
    # Extra weights are expected (a whole CLIP holds a text tower); a missing one would be random.
    unfilled = sorted(str(name) for part in ("missing_keys", "mismatched_keys") for name in loading.get(part) or ())
    if unfilled:
        raise DataError(f"{key}: the weights in '{directory}' leave {len(unfilled)} weights of the "
                        f"{MODEL_CLASSES[kind]} unfilled: {', '.join(unfilled[:5])}")
    width = model.config.projection_dim if kind == "clip" else model.config.hidden_size
    return EncoderFeatures(model.eval(), kind), ProcessorTransform(processor), width


class EncoderFeatures:
    """The features a probe reads: CLIP's projected image embedding, DINOv2's pooled output."""

    def __init__(self, model, kind: str):
        self.model = model
        self.kind = kind

    def to(self, device):
        self.model.to(device)
        return self

    def __call__(self, pixel_values):
        output = self.model(pixel_values=pixel_values)
        return output.image_embeds if self.kind == "clip" else output.pooler_output


class ProcessorTransform:
    """The image processor saved with a model, on one PIL image: its (3, H, W) pixel values."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image):
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
