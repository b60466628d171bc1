"""(k) Shared prefixes: a batch whose requests share long system prompts, on the `local` backend, against
llama.cpp called directly in the submitted order.

Model: the default, SmolLM2-135M-Instruct Q4_1 (one file for both sides), greedy, `max_tokens` 16, same
context size and thread count on both sides, one instance.

- k1 (shared prefixes): 4 system prompts of ~1,500 tokens x 4 questions each (16 requests), submitted
  interleaved (prompt A, B, C, D, A, B, ...), as a client building a batch question by question would.
  Direct: `llama_cpp.Llama.create_completion` in a plain loop in that order (llama.cpp reuses the KV
  cache of whatever prefix a prompt shares with the previous one: here only the template's first
  tokens). overnight: the same requests as one batch, create → `ended_at` (server clock); its scheduler
  runs requests sharing a prefix back to back, so each system prompt is evaluated about once.
- k2 (unique prefixes): 3 requests, each with a system prompt of its own (same length): nothing to
  share, so overnight must simply not be slower than the direct loop (what it did before grouping).

Order: direct k1, batch k1 (once each: the direct k1 loop alone takes 4-5 minutes on 2 cores), then
direct k2, batch k2, direct k2, batch k2, direct k2 (`--repeats 2`, compared as means, so that drift in
the machine's speed lands on both sides). The report also sums the batches' `cache_read_input_tokens`.

Figures: wall time each side; ratio = direct seconds / overnight seconds (higher is better).
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
from bench._report import Report, Row, pending, seconds, verdict

KEY = "k"
TITLE = "shared-prefix batch on the local model"
MIN_SHARED_RATIO = 2.5
MIN_UNIQUE_RATIO = 0.95
MAX_TOKENS = 16
N_CTX = 2048
SUBJECTS = ["astronomy", "botany", "cooking", "geology"]
QUESTIONS = [
    "What should I read first?",
    "Give me one surprising fact.",
    "Which tool do I need to start?",
    "What is a common beginner mistake?",
    "How long does it take to learn the basics?",
    "Name one famous person in this field.",
    "What is a good weekend project?",
    "Which word should every beginner know?",
]


def system_prompt(subject: str, sentences: int) -> str:
    """A long system prompt about `subject` (~26 tokens a sentence); its first words already differ."""
    rules = " ".join(
        f"Rule {n} for {subject}: answer briefly, name your sources, and say so when you are unsure."
        for n in range(sentences)
    )
    return f"You are a patient tutor of {subject}. {rules}"


@dataclass(frozen=True)
class Request:
    custom_id: str
    system: str
    question: str


@dataclass(frozen=True)
class Side:
    seconds: float
    texts: dict[str, str]
    cache_read_tokens: int = 0
    input_tokens: int = 0


def shared_workload(prompts: int, questions: int, sentences: int) -> list[Request]:
    systems = [system_prompt(SUBJECTS[n % len(SUBJECTS)] + f" (course {n})", sentences) for n in range(prompts)]
    return [
        Request(f"p{p}-q{q}", systems[p], QUESTIONS[q % len(QUESTIONS)])
        for q in range(questions)
        for p in range(prompts)  # interleaved: A B C D A B C D ...
    ]


def unique_workload(count: int, sentences: int) -> list[Request]:
    return [
        Request(f"u{n}", system_prompt(f"{SUBJECTS[n % len(SUBJECTS)]} (group {n})", sentences), QUESTIONS[n % 8])
        for n in range(count)
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", type=int, default=None, help="system prompts in k1 (default 4; quick 2)")
    parser.add_argument("--questions", type=int, default=None, help="questions per prompt in k1 (default 4; quick 2)")
    parser.add_argument("--unique", type=int, default=None, help="requests in k2 (default 3; quick 2)")
    parser.add_argument(
        "--sentences", type=int, default=None, help="sentences per system prompt (default 57 ≈ 1,500 tokens; quick 30)"
    )
    parser.add_argument(
        "--threads", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="llama.cpp threads, both sides"
    )
    add_repeats_argument(parser)


class DirectModel:
    """llama.cpp loaded once in this process, answering the requests in a plain loop, in order."""

    def __init__(self, model: Path, threads: int) -> None:
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(model), n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False
        )

    def loop(self, requests: list[Request]) -> Side:
        from overnight.backends.chat_template import ChatTemplate, render

        # No bos_token: create_completion adds that token itself where the model asks for one.
        template = ChatTemplate(self.llm.metadata.get("tokenizer.chat_template"))
        texts = {}
        start = time.perf_counter()
        for request in requests:
            text = render(template.prompt(request.system, [("user", request.question)]))
            completion: Any = self.llm.create_completion(
                text, max_tokens=MAX_TOKENS, temperature=0.0, repeat_penalty=1.0
            )
            texts[request.custom_id] = completion["choices"][0]["text"]
        return Side(time.perf_counter() - start, texts)

    def prompt_tokens(self, request: Request) -> int:
        return len(self.llm.tokenize(request.system.encode(), add_bos=False))

    def close(self) -> None:
        self.llm.close()


def batch_body(requests: list[Request]) -> bytes:
    params = [
        msgspec.json.encode(
            {
                "model": "smollm2-135m",
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
                "system": request.system,
                "messages": [{"role": "user", "content": request.question}],
            }
        )
        for request in requests
    ]
    return work.batch_body([request.custom_id for request in requests], params)


def one_batch(http: httpx.Client, requests: list[Request]) -> Side:
    """One batch from create to ended (server timestamps, polled once a second as in (f))."""
    drained = work.create_and_drain(http, batch_body(requests), timeout=1800, poll_seconds=1.0)
    texts, cache_read, input_tokens = {}, 0, 0
    for line in map(msgspec.json.decode, http.get(drained.batch["results_url"]).text.splitlines()):
        if line["result"]["type"] != "succeeded":
            raise RuntimeError(f"request {line['custom_id']} {line['result']['type']}: {line['result']}")
        message = line["result"]["message"]
        texts[line["custom_id"]] = "".join(block["text"] for block in message["content"])
        cache_read += message["usage"]["cache_read_input_tokens"] or 0
        input_tokens += message["usage"]["input_tokens"]
    return Side(drained.create_seconds + drained.server_run_seconds, texts, cache_read, input_tokens)


def same_texts(direct: Side, batch: Side) -> int:
    return sum(batch.texts.get(custom_id, "").strip() == text.strip() for custom_id, text in direct.texts.items())


def run(bench: Run) -> Report:
    args = bench.args
    prompts = args.prompts or (2 if bench.quick else 4)
    questions = args.questions or (2 if bench.quick else 4)
    unique_count = args.unique or (2 if bench.quick else 3)
    sentences = args.sentences or (30 if bench.quick else 57)
    threads = args.threads
    shared, unique = shared_workload(prompts, questions, sentences), unique_workload(unique_count, sentences)
    shared_label = (
        f"{TITLE}: {prompts} system prompts x {questions} questions, interleaved, {MAX_TOKENS} tokens max, "
        f"{threads} thread(s)"
    )
    unique_label = f"{TITLE}: {unique_count} requests with unique system prompts (nothing to share)"
    shared_target = f"direct / overnight ≥ {MIN_SHARED_RATIO}"
    unique_target = f"direct / overnight ≥ {MIN_UNIQUE_RATIO}"
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        why = "llama-cpp-python is not installed"
        return Report(
            KEY,
            TITLE,
            [
                pending(KEY + "1", shared_label, shared_target, why),
                pending(KEY + "2", unique_label, unique_target, why),
            ],
        )
    from overnight.backends.local import default_model_path

    model = default_model_path()
    config = write_router_config(
        bench.work / "routing.toml",
        "local",
        {"type": "local", "model_path": str(model), "instances": 1, "n_ctx": N_CTX, "n_threads": threads},
    )
    direct = DirectModel(model, threads)
    system_tokens = direct.prompt_tokens(shared[0])
    server = overnight_server(bench.work / "data", backend=None, config=config)
    try:
        with server, work.client(server.url) as http, bench.profiled(server.pid, KEY) as raw:
            # Warm the server's model (pages the file in) with a prompt that shares nothing with the rest.
            warm = [Request("warm", "Be brief.", "Hi")]
            work.create_and_drain(http, batch_body(warm), timeout=600, poll_seconds=1.0)
            direct_shared = direct.loop(shared)
            batch_shared = one_batch(http, shared)
            directs_unique, batches_unique = [direct.loop(unique)], []
            for _ in range(bench.repeats):
                batches_unique.append(one_batch(http, unique))
                directs_unique.append(direct.loop(unique))
    finally:
        direct.close()

    shared_ratio = direct_shared.seconds / batch_shared.seconds
    direct_unique = Side(statistics.fmean(side.seconds for side in directs_unique), directs_unique[0].texts)
    batch_unique = batches_unique[0]
    batch_unique_seconds = statistics.fmean(side.seconds for side in batches_unique)
    unique_ratio = direct_unique.seconds / batch_unique_seconds
    details = {
        "system prompt size": f"{system_tokens} tokens (SmolLM2 tokenizer), plus the question and template",
        "k1 direct loop (submitted order)": seconds(direct_shared.seconds),
        "k1 overnight batch (create → ended_at)": seconds(batch_shared.seconds),
        "k1 overnight usage": (
            f"cache_read_input_tokens {batch_shared.cache_read_tokens:,}, input_tokens {batch_shared.input_tokens:,}"
        ),
        "k1 same text on both sides": f"{same_texts(direct_shared, batch_shared)} of {len(shared)}",
        "k2 direct loops, in order": "; ".join(seconds(side.seconds) for side in directs_unique),
        "k2 overnight batches (create → ended_at), in order": "; ".join(
            seconds(side.seconds) for side in batches_unique
        ),
        "k2 overnight usage": (
            f"cache_read_input_tokens {batch_unique.cache_read_tokens:,}, input_tokens {batch_unique.input_tokens:,}"
        ),
        "k2 same text on both sides": f"{same_texts(direct_unique, batch_unique)} of {len(unique)}",
    }
    rows = [
        Row(
            KEY + "1",
            shared_label,
            f"overnight: {seconds(batch_shared.seconds)}",
            f"direct llama.cpp in submitted order: {seconds(direct_shared.seconds)}",
            shared_ratio,
            shared_target,
            verdict(shared_ratio >= MIN_SHARED_RATIO),
        ),
        Row(
            KEY + "2",
            unique_label,
            f"overnight: {seconds(batch_unique_seconds)} (mean)",
            f"direct llama.cpp: {seconds(direct_unique.seconds)} (mean)",
            unique_ratio,
            unique_target,
            verdict(unique_ratio >= MIN_UNIQUE_RATIO),
        ),
    ]
    return Report(KEY, TITLE, rows, details, profile=profile_summary(raw, "(k) the batches and direct loops"))


if __name__ == "__main__":
    main(
        run,
        key=KEY,
        title=TITLE,
        description=__doc__ or "",
        add_arguments=add_arguments,
        profile_help="record the server with py-spy while it runs the batches and summarise it",
    )
