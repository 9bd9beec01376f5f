"""DINOv2 image features for fidelity metrics (FD_DINOv2, precision/recall on DINOv2 features).

Inception features rank generator families unreliably (Stein et al., "Exposing flaws of
generative model evaluation metrics", NeurIPS 2023), who recommend the Fréchet distance on
DINOv2 ViT-L/14 features. As their dgm-eval does, images (prepared at config
``fidelity.dinov2_image_size``, 224, by features.py like every image set) are normalised with the
ImageNet mean and standard deviation and the feature is the layer-normalised class token
(transformers' ``Dinov2Model`` pooler output, DINOv2's ``x_norm_clstoken``), 1024-d for ViT-L.

``load`` reads a transformers ``Dinov2Model`` directory (config ``models.dinov2``, e.g.
facebook/dinov2-large saved with save_pretrained); the smoke run's tiny random one
(smoke/tiny_encoders.py) is saved and loaded through the same from_pretrained code.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load(path, key: str = "models.dinov2"):
    """The DINOv2 feature network at ``path``, in eval mode: ``network(images)`` maps float images
    (N, 3, H, W) in [0, 1] to features (N, network.feature_dim)."""
    from pathlib import Path

    import torch
    from transformers import Dinov2Model

    from contamination.errors import ConfigError

    if not (Path(path) / "config.json").is_file():
        raise ConfigError(f"{key}: '{path}' is not a transformers model directory (no config.json)")
    try:
        model = Dinov2Model.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(f"{key}: '{path}' is not a readable DINOv2 model ({error})") from error

    class DINOv2Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.feature_dim = model.config.hidden_size
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

        def forward(self, images):
            return self.model(pixel_values=(images - self.mean) / self.std).pooler_output

    return DINOv2Features().eval()
