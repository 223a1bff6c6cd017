"""How close a reply's code is to the reference solution (seed 002: "BLEU against the reference
code"), per probe and as the suite's mean, paired in the summary like a grade:

  codebleu  CodeBLEU (Ren et al. 2020; PyPI `codebleu`): the mean of token n-gram match,
            keyword-weighted n-gram match, syntax-tree match and data-flow match, in [0, 1]
  bleu      sentence BLEU of the code's text against the reference (sacrebleu, its default
            13a tokenizer), in [0, 1]

Both read the code a suite ran (the first fenced block, or evalplus's sanitized program); a
reply with no code scores 0 on both. With samples (eval.samples > 1) a probe's value is the
mean over its samples. Neither says whether the code is right: a correct solution written
another way scores low, and a wrong one that copies the reference's shape scores high. They
measure style drift toward or away from the references, next to pass@1, never instead of it.
"""

from __future__ import annotations

MEASURES = ("codebleu", "bleu")


def codebleu(code: str, reference: str) -> float:
    from codebleu import calc_codebleu  # tree-sitter is loaded only for the code suites

    return float(calc_codebleu([reference], [code], lang="python")["codebleu"])


def bleu(code: str, reference: str) -> float:
    import sacrebleu

    return sacrebleu.sentence_bleu(code, [reference]).score / 100


def per_probe(codes: list[str | None], reference: str) -> dict[str, float]:
    """Each measure's mean over the probe's samples; a sample without code counts 0."""
    scores = {m: 0.0 for m in MEASURES}
    for code in codes:
        if code is not None:
            scores["codebleu"] += codebleu(code, reference)
            scores["bleu"] += bleu(code, reference)
    return {m: round(v / len(codes), 4) for m, v in scores.items()}


def aggregate(rows: list[dict]) -> dict[str, float]:
    """The suite's mean of each measure over the rows that have a reference ({} when none)."""
    scored = [r["similarity"] for r in rows if "similarity" in r]
    if not scored:
        return {}
    return {m: round(sum(s[m] for s in scored) / len(scored), 4) for m in MEASURES}
