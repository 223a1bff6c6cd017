"""Generation: the replies eval, chat and the tests ask a variant for, and per-token loss.

common  what every backend shares: the Backend protocol, Decoding, the chat prompts, the
        cost (tokens/s, time to first token), the code block of a reply; imports no backend
hf      the transformers backend: our rolling batch, transformers' continuous batching
        (generate_batch), plain batched generate
vllm    the vLLM backend (eval.backend=vllm), the adapter applied per request
choose  which backend eval generates with (eval.backend), decided there and nowhere else
losses  the per-token loss of a reply (the perplexity suite; always transformers)

This file imports nothing, so importing one module loads only what that module imports.
"""
