"""perplexity: loss per assistant token on held-out replies, per domain. No generation: the
model scores the reference replies.

  code      the code probes' reference solutions (in a python fence, as a reply would be)
  general   the knowledge probes' answers, as a sentence
  identity  the configured identity's answers to the identity probes

Each row holds one probe's summed loss (`nats`) over its `tokens`; `<domain>_loss` is
sum(nats) / sum(tokens), token-weighted, and the summary pairs and judges that same quantity.
"""

from __future__ import annotations

from stages.config import EvalStage
from stages.data.formats import code_answer, knowledge_answer
from stages.generation.losses import assistant_losses, perplexity
from stages.suites import probe_dir, read_probes

JUDGED = "code_loss"  # each row names its own domain's metric


def probes(cfg: EvalStage, name: str) -> list[dict]:
    folder, limit = probe_dir(cfg), cfg.eval.limit
    out = [{"id": f"code/{t['id']}", "domain": "code", "question": t["prompt"],
            "answer": code_answer(t["solution"])}
           for t in read_probes(folder / "code.jsonl", limit)]
    out += [{"id": f"general/{p['id']}", "domain": "general", "question": p["question"],
             "answer": knowledge_answer(p)}
            for p in read_probes(folder / "knowledge.jsonl", limit)]
    out += [{"id": f"identity/{p['id']}", "domain": "identity", "question": p["query"],
             "answer": p["response"]}
            for p in read_probes(folder / "identity.jsonl", limit)]
    return out


def score(cfg: EvalStage, model, tokenizer, probes: list[dict]) -> list[dict]:
    conversations = [[{"role": "system", "content": cfg.system_prompt},
                      {"role": "user", "content": p["question"]},
                      {"role": "assistant", "content": p["answer"]}] for p in probes]
    rows = []
    losses = assistant_losses(model, tokenizer, conversations, cfg.eval.batch_size)
    for p, (nats, tokens) in zip(probes, losses, strict=True):
        if tokens == 0:
            raise RuntimeError(f"perplexity: no assistant tokens found in probe {p['id']}; the "
                               "chat template must mark the assistant's reply")
        rows.append({"id": p["id"], "metric": f"{p['domain']}_loss", "domain": p["domain"],
                     "prompt": p["question"], "reply": p["answer"], "nats": nats,
                     "tokens": tokens, "loss": round(nats / tokens, 4)})
    return rows


def aggregate(cfg: EvalStage, rows: list[dict]) -> dict:
    metrics = {}
    for domain in ("code", "general", "identity"):
        sub = [r for r in rows if r["domain"] == domain]
        if sub:
            mean, ppl = perplexity(sum(r["nats"] for r in sub), sum(r["tokens"] for r in sub))
            metrics[f"{domain}_loss"] = round(mean, 4)
            metrics[f"{domain}_ppl"] = round(ppl, 3)
    return metrics
