"""The smoke run's random stand-ins for the ImageNet ResNet-50 of the detectors and the FID
Inception-V3: saved in the formats of the real weights (config models.resnet50_detector,
models.inception), so the smoke run loads them through the same code as a real run (the DINOv2
and CLIP stand-ins are tiny_encoders.py's).

Commands: ``tiny-resnet50`` and ``tiny-inception`` (smoke.smk).
"""

import io

from contamination.io import atomic_path, require_replaceable


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-resnet50",
                                   help="save a randomly initialised torchvision ResNet-50 state dict (smoke run)")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_resnet50)

    parser = subparsers.add_parser(
        "tiny-inception", help="build a random FID Inception-V3 with re-estimated BatchNorm statistics and save it"
    )
    parser.add_argument("out", help="weights file (.pth), loaded like config models.inception")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=299, help="input size the statistics are estimated at")
    parser.set_defaults(run=run_tiny_inception)


def run_tiny_resnet50(args) -> None:
    require_replaceable(args.out)  # never over weights a user points it at
    save_random_resnet50(args.out, args.seed)
    print(f"random ResNet-50 (seed {args.seed}) saved to {args.out}")


def save_random_resnet50(out, seed: int) -> None:
    """The smoke run's stand-in for ImageNet weights: torchvision's ResNet-50 initialisation under
    ``seed``, saved as a state dict like the real weights file (the same seed, the same bytes)."""
    import torch
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.resnet50(weights=None)
    # torch.save names the archive's records after the file it writes to: through a buffer the
    # bytes do not depend on the temporary file name.
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with atomic_path(out) as temporary:
        temporary.write_bytes(buffer.getvalue())


def run_tiny_inception(args) -> None:
    import torch

    from contamination.metrics import inception

    require_replaceable(args.out)  # never over weights a user points it at
    torch.set_num_threads(1)  # BatchNorm statistics then do not depend on the machine's core count
    network = inception.build_random(args.seed, args.resolution)
    inception.save(network, args.out)
    print(f"random FID Inception (seed {args.seed}, BatchNorm statistics at {args.resolution} px) -> {args.out}")
