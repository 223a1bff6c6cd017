"""Diversity of the samples a probe gets when eval.samples > 1 (seed 002: "the same input
always gives similar code"), per probe and as the suite's mean, paired in the summary:

  distinct_2       distinct word bigrams over all bigrams of the probe's samples (1: no
                   bigram repeats across samples; 1/k: k samples say the same)
  self_similarity  mean Jaccard similarity of the samples' word sets over every pair
                   (1: identical samples; 0: no word in common)

Words are runs of letters, digits and underscores, and each other visible character on its
own, so code and prose split alike ("x=f(1)" -> x = f ( 1 )).
"""

from __future__ import annotations

import itertools
import re

WORD = re.compile(r"\w+|[^\w\s]")
MEASURES = ("distinct_2", "self_similarity")


def words(text: str) -> list[str]:
    return WORD.findall(text)


def distinct_n(samples: list[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of `samples`. ["a b c", "a b c"] at n = 2: 2 of 4,
    0.5; ["a b", "c d"]: 2 of 2, 1.0. No n-gram at all (every sample shorter than n): 0."""
    grams = [tuple(w[i:i + n]) for s in samples for w in [words(s)]
             for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def self_similarity(samples: list[str]) -> float:
    """Mean pairwise Jaccard similarity of the samples' word sets. ["a b", "a c"]: {a} of
    {a, b, c}, 1/3. Two empty samples are identical (1)."""
    pairs = list(itertools.combinations([set(words(s)) for s in samples], 2))
    if not pairs:
        raise ValueError("self_similarity needs at least 2 samples")
    return sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)


def per_probe(samples: list[str]) -> dict[str, float]:
    return {"distinct_2": round(distinct_n(samples, 2), 4),
            "self_similarity": round(self_similarity(samples), 4)}


def aggregate(rows: list[dict]) -> dict[str, float]:
    """The suite's mean of each measure over the rows that carry them ({} when none does)."""
    scored = [r["diversity"] for r in rows if "diversity" in r]
    if not scored:
        return {}
    return {m: round(sum(d[m] for d in scored) / len(scored), 4) for m in MEASURES}
