"""local_copy: a content hash of model.local_dir, so that DVC sees a changed local copy.

Reads   params model.local_dir, paths; every file under model.local_dir (when it is set)
Writes  metrics/local_copy.json: {"local_copy": {"local_dir", "sha256", "files"}} (nulls and 0
        without a local copy)
Run     dvc repro local_copy   (`always_changed` in dvc.yaml: it runs on every repro; it only
        hashes files)

A local copy of a hub model lives outside the repository and is too big for DVC to cache, so
no DVC dependency can track it (a `${model.local_dir}` dep even stops dvc when the param is
null). This stage runs every time and writes the hash; base depends on that file, which
changes exactly when the copy's content does, so base and everything after it rerun then
and only then. `python -m stages.tools.compose --check` leaves always-changed stages out of its
stale-lock check.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from stages.config import LocalCopyStage, load, run_stage
from stages.core.io import MissingInput, sha256_file, write_json


def main(cfg: LocalCopyStage | None = None) -> dict:
    cfg = cfg or load(LocalCopyStage)
    record = {"local_dir": cfg.model.local_dir, "sha256": None, "files": 0}
    if cfg.model.local_dir:
        root = Path(cfg.model.local_dir)
        record.update(sha256=local_copy_sha256(root), files=len(model_files(root)))
    write_json(Path(cfg.paths.metrics) / "local_copy.json", {"local_copy": record})
    print(f"local_copy: {record}")
    return record


def model_files(root: Path) -> list[Path]:
    """Every file of a local model copy but hidden ones (`hf download`'s .cache/)."""
    if not root.is_dir():
        raise MissingInput(f"model.local_dir={root} is not a directory; download the model "
                                "there (`hf download ID --revision SHA --local-dir DIR`)")
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def local_copy_sha256(root: Path) -> str:
    """One hash over the weights, tokenizer and config files of a local model copy,
    independent of listing order: each file's relative path and content hash, in turn."""
    files = model_files(root)
    if not files:
        raise MissingInput(f"model.local_dir={root} holds no files; copy the model there "
                                "(`hf download ID --revision SHA --local-dir DIR`)")
    h = hashlib.sha256()
    for file in files:
        h.update(file.relative_to(root).as_posix().encode())
        h.update(sha256_file(file).encode())
    return h.hexdigest()


if __name__ == "__main__":
    run_stage(main)
