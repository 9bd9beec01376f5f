"""Settings every test shares."""

import signal
import sys

import pytest

# Training code installs handlers for these (contamination.experiments.training.STOP_SIGNALS).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Module-scoped fixtures are built before a test's own fixtures run: they too get one thread,
    so what they make equals what a test remakes (the thread count moves pixels)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_process_state():
    """Torch work runs on one thread, so results do not depend on the core count and tests do not
    fight over the two cores; afterwards the determinism flag and the signal handlers an
    in-process training run installs are put back, so each test leaves pytest as it found it."""
    handlers = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    torch = sys.modules.get("torch")
    if torch is not None:
        threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
    yield
    if torch is not None:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    for number, handler in handlers.items():
        signal.signal(number, handler)
