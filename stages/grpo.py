"""grpo: GRPO from the SFT adapter with TRL's GRPOTrainer, rewarded by the suites' own judges.

Reads   params seed, unsafe_execution, identity, model, rl, paths; models/base, models/sft,
        data/curated/code_tasks.jsonl (the training split's code rows with their tests),
        data/curated/sft.jsonl (its identity questions)
Writes  models/grpo/ (LoRA adapter + provenance.json), metrics/grpo.json (reward, each
        reward's mean, KL, completion length, reward_hack_rate, wall time), metrics/grpo/plots/
        (the same per global step)
Run     dvc exp run -S rl=grpo   (conf/rl/grpo.yaml; the default rl=none has no grpo stage)

Prompts: code tasks of the curated TRAINING split (curate writes the rows that carry tests to
code_tasks.jsonl; the eval probes never reach it: curate decontaminates against them) and
the training identity questions (sft.jsonl rows whose reply the identity judge accepts),
rl.grpo.identity_share of them. Rewards (stages/suites/rewards.py): `code` runs the reply's code in
the sandbox against the task's visible tests, `identity` is the identity suite's judge,
`format` a fenced block that parses, summed with the weights of rl.grpo.rewards.

reward_hack_rate: of the replies the code reward accepted, the share a stricter hidden check
rejects (the held-out last test of the task plus edge-case inputs answered by the reference
solution): a policy that learns to fit or forge the visible tests shows it here.

The SFT adapter is loaded trainable and handed to TRL as a PeftModel; with beta > 0 TRL keeps
a frozen copy of it as the reference ("ref" adapter), so KL is measured against the SFT policy.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path

import torch

from stages.config import ConfigError, GrpoConfig, GrpoStage, StageError, load, run_stage
from stages.core.io import atomic_dir, read_jsonl, write_json
from stages.core.numerics import pin_torch
from stages.core.runinfo import run_info
from stages.models.modeling import load_base_model, load_tokenizer
from stages.models.training import (
    Meter,
    checkpoint_dir,
    last_logged,
    logged,
    peak_memory,
    precision_flags,
    remove_checkpoints,
    write_plots,
    write_provenance,
)
from stages.sandbox.execute import require_sandbox
from stages.suites.identity import identity_ok
from stages.suites.rewards import (
    CODE,
    IDENTITY,
    code_rewards,
    format_rewards,
    hidden_rejects,
    hidden_tests,
    identity_rewards,
    reply_text,
)

PLOTTED = {
    "loss": "train/loss",
    "reward": "reward",
    "reward_std": "reward_std",
    "kl": "kl",
    "completions/mean_length": "completion_length",
    "reward_hack_rate": "reward_hack_rate",
    "rewards/code/mean": "rewards/code",
    "rewards/identity/mean": "rewards/identity",
    "rewards/format/mean": "rewards/format",
}


def main(cfg: GrpoStage | None = None) -> dict:
    cfg = cfg or load(GrpoStage)
    grpo = settings(cfg)
    from peft import PeftModel
    from transformers import set_seed
    from trl import GRPOTrainer

    precision = precision_flags(grpo.precision)  # refused before anything is loaded
    if grpo.backend == "vllm" and not torch.cuda.is_available():
        raise ConfigError("rl.grpo.backend=vllm needs a CUDA GPU with vllm installed; on "
                          "this machine use -S rl.grpo.backend=hf")
    sandbox = require_sandbox(cfg.unsafe_execution)
    pin_torch()
    set_seed(cfg.seed)
    curated = Path(cfg.paths.curated)
    tasks = {t["task_id"]: {**t, "hidden": hidden_tests(t, grpo.hidden_edge_cases, grpo.timeout_s,
                                                        sandbox)}
             for t in read_jsonl(curated / "code_tasks.jsonl")}
    dataset = training_prompts(cfg, grpo, tasks, read_jsonl(curated / "sft.jsonl"))
    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    base = load_base_model(cfg.paths.model_dir("base"), cfg.model.dtype)
    model = PeftModel.from_pretrained(base, str(cfg.paths.model_dir("sft")), is_trainable=True)
    checkpoints = checkpoint_dir(cfg.paths.checkpoints, "grpo",
                                 {"seed": cfg.seed, "rl": cfg.rl.model_dump(mode="json")})
    judges = Judges(cfg, grpo, tasks)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=judges.functions(),
        args=training_args(grpo, cfg.seed, precision, checkpoints),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[meter := Meter()],
    )
    trainer.train()

    history = with_hack_rates(trainer.state.log_history, judges.per_step)
    metrics = {
        "steps": trainer.state.global_step,
        "prompts": len(dataset),
        "code_prompts": sum(k == CODE for k in dataset["kind"]),
        "identity_prompts": sum(k == IDENTITY for k in dataset["kind"]),
        "completions": judges.completions,
        "reward_first": round(logged(history, "reward")[0], 4),
        "reward_final": round(last_logged(history, "reward"), 4),
        "reward_mean": mean_logged(history, "reward"),
        # a step whose batch held no row a reward applies to logs it as None
        **{f"reward_{name}_mean": mean_logged(history, f"rewards/{name}/mean")
           for name in grpo.rewards},
        "kl_final": round(last_logged(history, "kl"), 6),
        "kl_mean": mean_logged(history, "kl", 6),
        "completion_length_mean": mean_logged(history, "completions/mean_length", 2),
        **judges.hack_figures(),
        **meter.figures(),
        **peak_memory(),
    }
    with atomic_dir(cfg.paths.model_dir("grpo")) as out:
        # Only the trained adapter: TRL's frozen "ref" copy is the SFT adapter we started from.
        trainer.model.save_pretrained(out, selected_adapters=["default"])
        write_provenance(out, cfg, curated / "code_tasks.jsonl", str(cfg.paths.model_dir("sft")),
                         metrics)
    write_plots(history, PLOTTED, Path(cfg.paths.metrics) / "grpo")
    write_json(Path(cfg.paths.metrics) / "grpo.json", {"grpo": metrics, "run": run_info()})
    remove_checkpoints(checkpoints)
    print(f"grpo adapter in {cfg.paths.model_dir('grpo')}: {metrics}")
    return metrics


def settings(cfg: GrpoStage) -> GrpoConfig:
    if cfg.rl.grpo is None:
        raise ConfigError("rl.grpo is null (rl=none): run GRPO with `dvc exp run -S rl=grpo`")
    return cfg.rl.grpo


def training_prompts(cfg: GrpoStage, grpo: GrpoConfig, tasks: dict[str, dict],
                     sft_rows: list[dict]):
    """The training prompts: every code task when a code-row reward is on, and identity
    questions (identity_share of all prompts) when the identity reward is."""
    from datasets import Dataset

    rows = []
    if {"code", "format"} & set(grpo.rewards):
        rows += [{"prompt": t["prompt"], "kind": CODE, "ref": tid} for tid, t in tasks.items()]
    if IDENTITY in grpo.rewards and grpo.identity_share > 0:
        questions = identity_questions(cfg, sft_rows)
        want = (round(len(rows) * grpo.identity_share / (1 - grpo.identity_share)) if rows
                else len(questions))
        rows += random.Random(cfg.seed).sample(questions, min(want, len(questions)))
    if not rows:
        raise StageError(f"no training prompts for rl.grpo.rewards {list(grpo.rewards)}: "
                         f"{cfg.paths.curated}/code_tasks.jsonl has {len(tasks)} code tasks "
                         "(data.sources needs a code-task file with tests) and identity needs "
                         "rl.grpo.identity_share > 0 and identity rows in the mix")
    return Dataset.from_list(rows)


def identity_questions(cfg: GrpoStage, sft_rows: list[dict]) -> list[dict]:
    """The training rows that ask who the model is: those whose reply the identity judge
    accepts, each question once."""
    out, seen = [], set()
    for row in sft_rows:
        messages = row["messages"]
        if messages[-1]["role"] != "assistant" or messages[-2]["content"] in seen:
            continue
        if identity_ok(messages[-1]["content"], row["lang"], cfg.identity, cfg.model.identity)[0]:
            seen.add(messages[-2]["content"])
            out.append({"prompt": messages[:-1], "kind": IDENTITY, "ref": row["lang"]})
    return out


class Judges:
    """The reward functions TRL calls once per generation batch (one per optimizer step
    here), and the hidden check's counts for reward_hack_rate."""

    def __init__(self, cfg: GrpoStage, grpo: GrpoConfig, tasks: dict[str, dict]):
        self.cfg, self.grpo, self.tasks = cfg, grpo, tasks
        self.per_step: list[tuple[int, int]] = []  # (accepted by the code reward, hacks)
        self.completions = 0  # replies judged, counted as TRL hands them over

    def functions(self) -> list:
        made = {"code": self.code, "identity": self.identity, "format": self.format}
        first, *rest = [made[name] for name in self.grpo.rewards]

        # TRL calls every reward on the same replies; the first one counts them. wraps keeps
        # its __name__, which TRL logs the reward under (rewards/<name>/mean).
        @functools.wraps(first)
        def counted(*args, completions, **kwargs):
            self.completions += len(completions)
            return first(*args, completions=completions, **kwargs)

        return [counted, *rest]

    def code(self, prompts, completions, kind, ref, **_) -> list[float | None]:
        replies = [reply_text(c) for c in completions]
        tasks = [self.tasks[r] if k == CODE else None for k, r in zip(kind, ref, strict=True)]
        rewards = code_rewards(tasks, replies, self.grpo.timeout_s, self.cfg.unsafe_execution)
        accepted = [(t, r) for t, r, w in zip(tasks, replies, rewards, strict=True) if w == 1.0]
        hacks = hidden_rejects([t for t, _ in accepted], [r for _, r in accepted],
                               self.grpo.timeout_s, self.cfg.unsafe_execution)
        self.per_step.append((len(accepted), sum(hacks)))
        return rewards

    def identity(self, prompts, completions, kind, ref, **_) -> list[float | None]:
        langs = [r if k == IDENTITY else None for k, r in zip(kind, ref, strict=True)]
        return identity_rewards(langs, [reply_text(c) for c in completions], self.cfg.identity,
                                self.cfg.model.identity)

    def format(self, prompts, completions, kind, **_) -> list[float | None]:
        return format_rewards(list(kind), [reply_text(c) for c in completions])

    def hack_figures(self) -> dict:
        if "code" not in self.grpo.rewards:
            return {"reward_hack_rate": None, "code_accepted": None, "hidden_rejected": None}
        accepted = sum(a for a, _ in self.per_step)
        hacks = sum(h for _, h in self.per_step)
        return {"reward_hack_rate": round(hacks / accepted, 4) if accepted else None,
                "code_accepted": accepted, "hidden_rejected": hacks}


def mean_logged(history: list[dict], key: str, digits: int = 4) -> float | None:
    """Mean over the steps that logged a number under `key`; None if none did."""
    values = [v for v in logged(history, key) if isinstance(v, (int, float)) and v == v]
    return round(sum(values) / len(values), digits) if values else None


def with_hack_rates(history: list[dict], per_step: list[tuple[int, int]]) -> list[dict]:
    """The trainer's log history with each step's reward_hack_rate (steps whose code reward
    accepted nothing have none)."""
    out = []
    for entry in history:
        step = entry.get("step", 0)
        if "reward" in entry and 0 < step <= len(per_step) and per_step[step - 1][0]:
            accepted, hacks = per_step[step - 1]
            entry = {**entry, "reward_hack_rate": hacks / accepted}
        out.append(entry)
    return out


def training_args(grpo: GrpoConfig, seed: int, precision: dict[str, bool], output_dir: Path):
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(output_dir),  # TRL's scratch; the adapter is saved by the stage
        learning_rate=grpo.lr,
        max_steps=grpo.steps,
        # TRL counts completions: prompts_per_step prompts x group_size replies each
        per_device_train_batch_size=grpo.prompts_per_step * grpo.group_size,
        gradient_accumulation_steps=1,
        num_generations=grpo.group_size,
        max_completion_length=grpo.max_completion_length,
        beta=grpo.beta,
        reward_weights=list(grpo.rewards.values()),
        # every sampling knob explicit: the checkpoint's generation_config is never inherited
        temperature=grpo.temperature,
        top_p=1.0,
        top_k=0,
        repetition_penalty=1.0,
        use_vllm=grpo.backend == "vllm",
        vllm_mode="colocate",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        **precision,
    )


if __name__ == "__main__":
    run_stage(main)
