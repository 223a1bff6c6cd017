"""chat: talk to a variant the way users try a model after training.

Reads   params system_prompt, model, eval, paths; models/base and the variant's adapter
Run     python -m stages.tools.chat --variant sft                      # interactive; empty line quits
        python -m stages.tools.chat --variant dpo --prompt "Who are you?"   # one reply, then exit

Greedy, with the same system prompt and decoding (eval.*: length, repetition penalty, every end
token of the checkpoint) as eval, so what you see is what the eval scored. Interactive mode keeps the conversation; /reset starts a new one.
"""

from __future__ import annotations

import argparse
import sys

from stages.config import (
    VARIANTS,
    EvalConfig,
    ModelConfig,
    PathsConfig,
    Strict,
    load,
    run_stage,
)
from stages.generation.common import decoding
from stages.generation.hf import generate
from stages.models.modeling import load_tokenizer, load_variant


class ChatStage(Strict):
    system_prompt: str
    model: ModelConfig
    eval: EvalConfig
    paths: PathsConfig


def main(argv: list[str] | None = None, cfg: ChatStage | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="sft", choices=VARIANTS)
    parser.add_argument("--prompt", help="one message; print the reply and exit")
    args = parser.parse_args(argv)
    cfg = cfg or load(ChatStage)

    tokenizer = load_tokenizer(cfg.paths.model_dir("base"))
    model = load_variant(cfg.paths, args.variant, cfg.model.dtype)
    history = [{"role": "system", "content": cfg.system_prompt}]
    greedy = decoding(cfg.eval, cfg.paths.model_dir("base"), tokenizer)

    def reply_to(message: str) -> str:
        history.append({"role": "user", "content": message})
        reply = generate(model, tokenizer, [history], greedy, 1, "chat")[0]
        history.append({"role": "assistant", "content": reply})
        return reply

    if args.prompt is not None:
        reply = reply_to(args.prompt)
        print(reply)
        return [reply]
    replies = []
    print(f"chatting with {args.variant} (empty line quits, /reset starts over)")
    for line in sys.stdin if not sys.stdin.isatty() else iter(lambda: input("> "), None):
        message = line.strip()
        if not message:
            break
        if message == "/reset":
            del history[1:]
            continue
        replies.append(reply_to(message))
        print(replies[-1], flush=True)
    return replies


if __name__ == "__main__":
    run_stage(main)
