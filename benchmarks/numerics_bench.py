"""Which CPU settings change the tiny base's weights, and what pinning them costs.

    python -m benchmarks.numerics_bench --steps 60

Trains the tiny base (params.yaml's architecture and corpus, --steps optimizer steps, warmup
scaled) in a fresh subprocess per setting, each in its own temporary directory, and prints
the sha256 of model.safetensors and the pretraining wall time (base.json's train_s). The
settings: the pinned numerics of stages/core/numerics.py (twice: repeatability), then one thing
varied at a time: torch's kernels at another instruction set (ATEN_CPU_CAPABILITY=default:
no vectorisation; =avx512: only where the CPU has it, else torch stays at what it has, and
the record says which it ran), 1 intra-op thread instead of 2, every pin removed (torch's,
oneDNN's and MKL's own choices for this CPU), deterministic algorithms off, and the rows of
each batch in reverse order (stages.base.canonical_order sorts them, so this must not
matter) and in another fixed order (it does). Writes benchmarks/results/numerics_bench.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks import harness, record

REPO = Path(__file__).resolve().parent.parent

# child: pin (import stages), then apply the setting, then train
CHILD = r"""
import json, os, sys
import stages
from stages.core import numerics
setting = json.loads(sys.argv[1])
for key in setting.get("unset", []):
    os.environ.pop(key, None)
os.environ.update(setting.get("env", {}))
import torch
from stages import base
from stages.config import BaseStage, validate, stage_params
if setting.get("nondeterministic"):
    base.pin_torch = lambda: torch.set_num_threads(numerics.THREADS)
if setting.get("reverse_rows"):  # the sampler's order reversed, before canonical_order
    canonical = base.canonical_order
    base.canonical_order = lambda batch: canonical(batch[::-1])
if setting.get("other_order"):  # canonical_order replaced by another fixed order
    base.canonical_order = lambda batch: sorted(batch, reverse=True)
params = json.loads(sys.argv[2])
base.main(validate(BaseStage, stage_params(BaseStage, params)))
print("NUMERICS", json.dumps(numerics.settings()))
"""

SETTINGS = [
    ("pinned", {}),
    ("pinned, again", {}),
    ("ATEN_CPU_CAPABILITY=default", {"env": {"ATEN_CPU_CAPABILITY": "default"}}),
    ("ATEN_CPU_CAPABILITY=avx512", {"env": {"ATEN_CPU_CAPABILITY": "avx512",
                                            "ONEDNN_MAX_CPU_ISA": "ALL", "MKL_CBWR": "AUTO"}}),
    ("1 thread", {"env": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}),
    ("nothing pinned but threads=2", {"unset": ["ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                "MKL_CBWR"], "nondeterministic": True}),
    ("deterministic algorithms off", {"nondeterministic": True}),
    ("rows of a batch reversed", {"reverse_rows": True}),
    ("rows in another fixed order", {"other_order": True}),
]


def train(setting: dict, steps: int, work: Path) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["model"]["train"].update(steps=steps, warmup_steps=max(1, steps // 10))
    params["paths"].update(sources=str(REPO / params["paths"]["sources"]),
                           models=str(work / "models"), metrics=str(work / "metrics"))
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(setting), json.dumps(params)],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"setting {setting} failed:\n{done.stderr[-3000:]}")
    numerics = json.loads(next(line for line in done.stdout.splitlines()
                               if line.startswith("NUMERICS "))[len("NUMERICS "):])
    from stages.core.io import sha256_file

    metrics = json.loads((work / "metrics" / "base.json").read_text())["base"]
    return {"sha256": sha256_file(work / "models" / "base" / "model.safetensors"),
            "train_s": metrics["train_s"], "final_loss": metrics["final_loss"],
            "numerics": numerics}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    from stages.core.numerics import has_avx2

    avx512 = "avx512f" in Path("/proc/cpuinfo").read_text()
    skipped = {} if avx512 else {"ATEN_CPU_CAPABILITY=avx512": "this CPU lacks AVX-512: "
                                 "torch would run its AVX-512 kernels anyway and die of SIGILL"}
    results = {}
    for label, setting in SETTINGS:
        if label in skipped:
            print(f"{label:32s} not run: {skipped[label]}")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            results[label] = train(setting, args.steps, Path(tmp))
        r = results[label]
        same = r["sha256"] == results["pinned"]["sha256"]
        print(f"{label:32s} {r['sha256'][:16]} {'same' if same else 'DIFFERENT':9s} "
              f"loss {r['final_loss']} train {r['train_s']} s  "
              f"(ran at {r['numerics']['cpu_capability']}, {r['numerics']['torch_threads']} "
              "threads)")
    pinned = results["pinned"]
    figures = []
    for label, r in results.items():
        figures.append(record.figure(f"{label}: weights as pinned",
                                     "identical" if r["sha256"] == pinned["sha256"]
                                     else "different", f"ran at {r['numerics']['cpu_capability']}"
                                     f", {r['numerics']['torch_threads']} threads"))
        figures.append(record.figure(f"{label}: pretraining", r["train_s"], "s"))
    figures += [record.figure(f"{label}: not run", why) for label, why in skipped.items()]
    notes = (f"CPU has AVX2+FMA: {has_avx2()}, AVX-512: {avx512}. Tiny base (params.yaml's architecture and corpus), {args.steps} steps, one "
             "subprocess per setting, run one after another on this machine; sha256 of "
             "model.safetensors. " + "; ".join(f"{k}: {v['sha256'][:12]} loss {v['final_loss']}"
                                                for k, v in results.items()))
    record.write("numerics_bench", "Pinned CPU numerics: what changes the weights, what it costs",
                 figures, notes, args.json)


if __name__ == "__main__":
    main()
