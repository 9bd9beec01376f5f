"""A tiny randomly initialised Stable Diffusion pipeline for the smoke run."""


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("tiny-sd", help="build and save a tiny random StableDiffusionPipeline")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run_tiny_sd)


def run_tiny_sd(args) -> None:
    raise NotImplementedError("being written")
