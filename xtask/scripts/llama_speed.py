"""Prefill and decode speed of llama.cpp (through llama-cpp-python) on a GGUF file, on the
prompts of the embedded model's bench (crates/plan-llm-local/benches/local_model.rs), for
`cargo xtask bench`'s side-by-side figures.

Usage: python llama_speed.py MODEL.gguf [--threads 1 2] [--runs 2]

Prints one JSON object per thread count on stdout:
  {"threads": T, "prompt_tokens": N, "prefill_tok_s": X, "decode_tokens": M, "decode_tok_s": Y}
and a human line for each on stderr.

How it measures: llama.cpp's own performance counters (`llama_perf_context`: the time
spent in `llama_decode` for the prompt batch and for the single-token steps), not the wall
clock of this script, so Python's overhead is not counted against llama.cpp. The prompt is
decoded as one batch (prefill); the reply is decoded one token at a time, greedily, up to
128 tokens or the end of turn (decode). Best of `--runs` runs, as the embedded bench does.
"""

import argparse
import ctypes
import json
import sys

import jinja2
import llama_cpp
import numpy as np

# The embedded bench's prompts (local_model.rs: `prefill` and `free`).
PREFILL_USER = "Summarise: " + "The quick brown fox jumps over the lazy dog. " * 30
DECODE_USER = "Write a short story about a lighthouse keeper."
# The bench decodes 129 tokens and times the last 128 of them.
DECODE_TOKENS = 128
N_CTX = 2048


def render(template: str, user: str) -> str:
    """The prompt text, rendered as the embedded model renders it (plan-llm-local's
    chat.rs: the GGUF's template, no BOS text, `<|im_end|>` as EOS)."""

    def raise_exception(message):
        raise jinja2.TemplateError(message)

    env = jinja2.Environment()
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[{"role": "user", "content": user}],
        add_generation_prompt=True,
        bos_token="",
        eos_token="<|im_end|>",
    )


class Bench:
    """One model loaded with `threads` threads for both prompt and token decoding."""

    def __init__(self, path: str, threads: int):
        self.llm = llama_cpp.Llama(
            model_path=path,
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=N_CTX,
            n_batch=512,
            verbose=False,
        )
        self.ctx = self.llm._ctx.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm._model.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if template is None:
            sys.exit("llama_speed.py: the model file has no chat template")
        self.template = template

    def tokens(self, user: str) -> list:
        text = render(self.template, user)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def clear(self):
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        llama_cpp.llama_perf_context_reset(self.ctx)

    def decode(self, tokens: list):
        array = (llama_cpp.llama_token * len(tokens))(*tokens)
        batch = llama_cpp.llama_batch_get_one(array, len(tokens))
        rc = llama_cpp.llama_decode(self.ctx, batch)
        if rc != 0:
            sys.exit(f"llama_speed.py: llama_decode failed ({rc})")
        # Decoding may run on in the background: the perf counters count a batch when
        # it is waited for.
        llama_cpp.llama_synchronize(self.ctx)

    def next_token(self) -> int:
        logits = llama_cpp.llama_get_logits_ith(self.ctx, -1)
        row = np.ctypeslib.as_array(
            ctypes.cast(logits, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,)
        )
        return int(np.argmax(row))

    def perf(self):
        return llama_cpp.llama_perf_context(self.ctx)

    def prefill(self, tokens: list) -> float:
        """Prompt tokens per second of one run."""
        self.clear()
        self.decode(tokens)
        p = self.perf()
        return p.n_p_eval / max(p.t_p_eval_ms, 1e-6) * 1000.0

    def generate(self, tokens: list) -> tuple:
        """(reply tokens decoded one by one, their tokens per second) of one run."""
        self.clear()
        self.decode(tokens)
        for _ in range(DECODE_TOKENS):
            token = self.next_token()
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                break
            self.decode([token])
        p = self.perf()
        return p.n_eval, p.n_eval / max(p.t_eval_ms, 1e-6) * 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    for threads in args.threads:
        bench = Bench(args.model, threads)
        prompt = bench.tokens(PREFILL_USER)
        story = bench.tokens(DECODE_USER)
        # Warm up (first touch of the weights and buffers), as the embedded bench does.
        bench.prefill(story)
        prefill = max(bench.prefill(prompt) for _ in range(args.runs))
        decoded = [bench.generate(story) for _ in range(args.runs)]
        n_decoded, decode = max(decoded, key=lambda d: d[1])
        figures = {
            "threads": threads,
            "prompt_tokens": len(prompt),
            "prefill_tok_s": round(prefill, 1),
            "decode_tokens": n_decoded,
            "decode_tok_s": round(decode, 1),
        }
        print(json.dumps(figures), flush=True)
        print(
            f"llama.cpp {llama_cpp.__version__}, threads={threads}: prompt {prefill:.0f} tok/s "
            f"({len(prompt)} tokens), decode {decode:.1f} tok/s ({n_decoded} tokens)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
