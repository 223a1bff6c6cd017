"""Where a pinned pretraining step of the tiny base spends its time.

    python -m benchmarks.step_profile --steps 20

Builds the tiny base with stages.base.untrained (params.yaml's architecture and corpus, the
pinned numerics of stages/core/numerics.py) and runs stages.base.pretrain for --steps steps
three times in this process: once to warm up (first calls allocate and pick kernels), once
plain, for the seconds per step, then under torch.profiler, for
the shares of the profiled CPU time that go to matrix multiplies (aten::mm/addmm/bmm, with
the profiler's own FLOP count for them), attention (the scaled-dot-product kernels, forward
and backward), the optimizer (AdamW.step and zero_grad, children included) and the rest,
whose five largest ops the record names.
The profiler adds overhead of its own, so its shares, not its seconds, are the figures.
Writes benchmarks/results/step_profile.json.
"""

from __future__ import annotations

import time

from benchmarks import harness, record

MATMULS = {"aten::mm", "aten::addmm", "aten::bmm"}


def build(steps: int):
    """The tiny base's untrained model and encoded corpus (the stage's own stages.base.
    untrained), and a train config of `steps` steps."""
    from stages import base
    from stages.config import BaseStage, load

    cfg = load(BaseStage, record.REPO / "params.yaml")
    base.pin_torch()
    _, _, model, sequences = base.untrained(cfg)
    train = cfg.model.train.model_copy(update={"steps": steps,
                                               "warmup_steps": max(1, steps // 10)})
    return cfg, model, sequences, train


def shares(events) -> dict[str, float]:
    """Self CPU microseconds by kind, and the matmuls' FLOPs."""
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMULS)
    attention = sum(e.self_cpu_time_total for e in events if "scaled_dot_product" in e.key)
    # the optimizer's record_function spans hold its elementwise ops: their total, once
    optimizer = sum(e.cpu_time_total for e in events
                    if e.key.startswith(("Optimizer.step", "Optimizer.zero_grad")))
    flops = sum(e.flops for e in events if e.key in MATMULS)
    return {"total_us": total, "matmul_us": matmul, "attention_us": attention,
            "optimizer_us": optimizer, "other_us": total - matmul - attention - optimizer,
            "matmul_flops": flops}


def main() -> None:
    parser = harness.parser(__doc__)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile

    from stages import base

    cfg, model, sequences, train = build(args.steps)
    base.pretrain(model, sequences, train, cfg.seed)
    start = time.perf_counter()
    base.pretrain(model, sequences, train, cfg.seed)
    per_step = (time.perf_counter() - start) / args.steps
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        base.pretrain(model, sequences, train, cfg.seed)
    events = prof.key_averages()
    s = shares(events)
    share = {kind: s[f"{kind}_us"] / s["total_us"]
             for kind in ("matmul", "attention", "optimizer", "other")}
    gflops = s["matmul_flops"] / s["matmul_us"] / 1e3  # FLOP per microsecond / 1e3 = GFLOP/s
    for kind, value in share.items():
        print(f"{kind:10s} {value:6.1%} of the profiled CPU time")
    print(f"{per_step:.3f} s per step unprofiled; matmuls at {gflops:.0f} GFLOP/s "
          f"({torch.get_num_threads()} threads)")
    figures = [record.figure("a step, unprofiled", round(per_step, 3), "s"),
               *[record.figure(f"{kind}: share of the profiled CPU time", round(v, 3), "")
                 for kind, v in share.items()],
               record.figure("matmuls' throughput (profiler FLOPs / their self time)",
                             round(gflops, 1), "GFLOP/s")]
    rest = sorted((e for e in events if e.key not in MATMULS and "scaled_dot_product" not in e.key
                   and not e.key.startswith("Optimizer.")),
                  key=lambda e: -e.self_cpu_time_total)[:5]
    largest = ", ".join(f"{e.key} {e.self_cpu_time_total / s['total_us']:.1%}" for e in rest)
    print(f"largest of the rest: {largest}")
    notes = (f"Tiny base (params.yaml), {args.steps} steps of batch {train.batch_size} "
             "packed conversations per run, pinned numerics, "
             f"{torch.get_num_threads()} torch threads; the profiled run is a second pass "
             "over the same model (its weights have moved on, its shapes have not). The largest "
             f"ops of the rest, by self time (the optimizer's among them): {largest}.")
    record.write("step_profile", "Where a pinned base pretraining step spends its time",
                 figures, notes, args.json)


if __name__ == "__main__":
    main()
