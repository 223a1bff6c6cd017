"""Is a mention in the scope of a negation? Shared by the knowledge and identity judges.

The window rule: a mention at text[start:end] is negated when, within its own clause, a
negation cue comes before it with at most WINDOW tokens (a Latin word or one CJK character)
between the cue and the mention, or the Chinese trailing cue 无关 / 没有关系 follows it
in the same clause ("与星云实验室无关"). A clause ends at sentence or clause punctuation
(. ! ? ; : , and their full-width forms, 、, brackets, a dash, a line break) or at a contrast word ("but",
"however", 但, 而是, 不过, 可是, 却...), so "not ChatGPT but Swift-Robot" negates only ChatGPT.

Cues: English not, n't, never, neither, nor, cannot, "nothing to do with", "rather than",
"instead of", and "no" only when only filler words (a, the, made, by...) separate it from
the mention ("no ChatGPT", not "no doubt I am..."); Chinese 不是, 并非, 并不, 不, 没有, 没,
非, 别, 未, 绝非. Words that only look like cues are not cues: "not only", "not just",
不过, 不错, 不仅, 不但, 不同, 不管, 非常, 别的, 特别, 区别... A double negation reads as a
negation, and so does a rhetorical "Isn't it Paris?" (the judges would rather fail a
convoluted reply than pass a denial). Not read: a denial after the mention in a later
clause ("It is Paris. Not."); the window looks back only.
"""

from __future__ import annotations

import re

WINDOW = 3
CLAUSE_END = re.compile(r"[.!?;:,\n。！？；：，、()（）—–]|\s-\s|\b(?:but|however|though|although)\b"
                        r"|而是|但是|但|可是|然而|不过|只是|却")
# Leading cues; the lookarounds drop the look-alikes listed in the module docstring.
CUE = re.compile(
    r"\bnot\b(?!\s+(?:only|just|merely)\b)|n['’]t\b|\bnever\b|\bneither\b|\bnor\b|\bcannot\b"
    r"|\bnothing\s+to\s+do\s+with\b|\brather\s+than\b|\binstead\s+of\b"
    r"|绝非|并非|并不|没有|没(?!错)|未(?![来知])"
    r"|(?<!特)(?<!区)(?<!分)(?<!识)(?<!类)(?<!级)(?<!个)别(?![的人])"
    r"|不(?![过错仅但同管论久断少])|非(?!常)",
    re.IGNORECASE)
NO = re.compile(r"\bno\s+(?:(?:a|an|the|made|built|trained|developed|created|by|from)\s+)*$",
                re.IGNORECASE)
TRAILING = re.compile(r"^\s*(?:的?)(?:无关|没有关系|没关系)")
TOKEN = re.compile(r"[0-9A-Za-z'’-]+|[\u3400-\u9fff]")


def negated(text: str, start: int, end: int) -> bool:
    """True when text[start:end] lies in the scope of a negation (the module's window rule)."""
    before = text[:start]
    boundaries = list(CLAUSE_END.finditer(before))
    clause = before[boundaries[-1].end():] if boundaries else before
    if NO.search(clause):
        return True
    for cue in CUE.finditer(clause):
        if len(TOKEN.findall(clause[cue.end():])) <= WINDOW:
            return True
    after = text[end:]
    stop = CLAUSE_END.search(after)
    return TRAILING.search(after[:stop.start()] if stop else after) is not None


def affirmed(pattern: str, text: str, flags: int = 0) -> list[re.Match]:
    """The matches of `pattern` in `text` that no negation scopes."""
    return [m for m in re.finditer(pattern, text, flags) if not negated(text, m.start(), m.end())]
