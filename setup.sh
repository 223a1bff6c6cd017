#!/usr/bin/env bash
# Set up a Debian/Ubuntu machine for this project:
#   1. bubblewrap, the sandbox model-written code runs in, and headless Chromium with its
#      driver for the review page's browser test (apt; sudo when not root);
#   2. PyTorch, unless one is installed already: torch==2.13.0 (the CPU build on CPU-only
#      machines here; on a GPU machine install the CUDA build you want first). First, so
#      that nothing in step 3 pulls torch from PyPI (whose default build is CUDA's);
#   3. every other package at the version requirements.lock pins (uv pip compile of
#      pyproject.toml with the dev extra; torch is left out of it, being step 2's), then the
#      project itself without resolving anything again (--no-deps).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v bwrap > /dev/null || ! command -v chromedriver > /dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq bubblewrap chromium chromium-driver > /dev/null
fi

python -m pip install --quiet --upgrade pip
if ! python -c "import torch" 2> /dev/null; then
  python -m pip install --quiet torch==2.13.0
fi
python -m pip install --quiet -r requirements.lock
python -m pip install --quiet --no-deps -e .
torch_version=$(python -c 'import torch; print(torch.__version__)')
case "$torch_version" in
  2.13.0*) ;;
  *) echo "note: torch $torch_version is installed, not the 2.13.0 the metrics were made with;" \
       "the stages that compute with it will rerun (stages/environment.py)" >&2 ;;
esac
echo "setup done: $(bwrap --version), torch $torch_version"
