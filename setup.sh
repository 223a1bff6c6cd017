#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine for this project:
#   1. bubblewrap, the sandbox model-written code runs in (apt; sudo when not root);
#   2. PyTorch, unless one is installed already: torch==2.13.0 (the CPU build on CPU-only
#      machines here; on a GPU machine install the CUDA build you want first);
#   3. the project itself with its dev extra (tests, lint).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v bwrap > /dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq bubblewrap > /dev/null
fi

python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2> /dev/null; then
  python -m pip install --quiet torch==2.13.0
fi
python -m pip install --quiet -e ".[dev]"
echo "setup done: $(bwrap --version), torch $(python -c 'import torch; print(torch.__version__)')"
