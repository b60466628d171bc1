"""Cache accounting and prefix affinity of LocalBackend on the real default GGUF (SmolLM2-135M-Instruct).

llama.cpp keeps the previous prompt's KV cache and evaluates only what a new prompt does not share with
it; the usage reports those reused tokens as `cache_read_input_tokens`, as the Messages API does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from overnight.backends.local import LocalBackend
from overnight.protocol.messages import MessageCreateParams

# ~500 tokens, so that a reused prefix is unmistakable next to the few tokens of a question.
LONG_SYSTEM = "You are a careful librarian who answers questions about books. " + " ".join(
    f"Rule {n}: cite the shelf number of every book you mention and never invent a title." for n in range(25)
)
OTHER_SYSTEM = "You are a cheerful gardener. " + " ".join(
    f"Tip {n}: water tomatoes in the morning and mulch the beds before the summer heat." for n in range(25)
)


def params(system: str, question: str, **overrides: Any) -> MessageCreateParams:
    data: dict[str, Any] = {
        "model": "smollm2",
        "max_tokens": 4,
        "temperature": 0.0,
        "system": system,
        "messages": [{"role": "user", "content": question}],
    }
    data.update(overrides)
    return MessageCreateParams.model_validate(data)


@pytest.fixture
async def backend(local_model_path: Path) -> AsyncIterator[LocalBackend]:
    backend = LocalBackend(n_ctx=2048, n_threads=1)  # no seed: the KV cache is reused
    await backend.start()
    yield backend
    await backend.aclose()


async def usage_and_count(backend: LocalBackend, request: MessageCreateParams) -> tuple[dict[str, Any], int]:
    result = await backend.create_message(request)
    return result["usage"], await backend.count_tokens(request)


@pytest.mark.local_model
async def test_a_shared_system_prompt_is_read_from_the_cache(backend: LocalBackend) -> None:
    first, first_count = await usage_and_count(backend, params(LONG_SYSTEM, "Where are the atlases?"))
    assert first["cache_read_input_tokens"] == 0  # a fresh instance has nothing cached
    assert first["cache_creation_input_tokens"] == 0
    assert first["input_tokens"] == first_count > 400

    second, second_count = await usage_and_count(backend, params(LONG_SYSTEM, "Do you lend poetry books?"))
    # The whole system turn came from the cache; only the question and the template's tail are new.
    assert second["cache_read_input_tokens"] > 400
    assert second["input_tokens"] < 30
    assert second["input_tokens"] + second["cache_read_input_tokens"] == second_count  # count_tokens: all of it

    other, other_count = await usage_and_count(backend, params(OTHER_SYSTEM, "When do I plant beans?"))
    assert other["cache_read_input_tokens"] < 10  # at most the template's opening tokens match
    assert other["input_tokens"] + other["cache_read_input_tokens"] == other_count


@pytest.mark.local_model
async def test_the_same_prompt_again_is_read_from_the_cache_whole(backend: LocalBackend) -> None:
    request = params(LONG_SYSTEM, "Where are the atlases?")
    await backend.create_message(request)
    again, count = await usage_and_count(backend, request)
    assert again["cache_read_input_tokens"] >= count - 1  # llama.cpp may replay the last token for its logits
    assert again["input_tokens"] + again["cache_read_input_tokens"] == count


@pytest.mark.local_model
async def test_a_seeded_backend_reports_no_cache_reads(local_model_path: Path) -> None:
    # With a seed every prompt is evaluated from scratch (reproducible sampling), so nothing is read.
    backend = LocalBackend(n_ctx=2048, n_threads=1, seed=3)
    await backend.start()
    try:
        await backend.create_message(params(LONG_SYSTEM, "Where are the atlases?"))
        usage, count = await usage_and_count(backend, params(LONG_SYSTEM, "Do you lend poetry books?"))
    finally:
        await backend.aclose()
    assert usage["cache_read_input_tokens"] == 0
    assert usage["input_tokens"] == count


@pytest.mark.local_model
async def test_a_prefix_sticks_to_the_instance_that_ran_it(local_model_path: Path) -> None:
    # Two instances, requests one at a time: A, B, B, A. Handed out in turn (as a plain queue would),
    # the third and fourth would land on the instance holding the other prefix; by affinity both hit.
    backend = LocalBackend(n_ctx=2048, n_threads=1, instances=2)
    await backend.start()
    try:
        reads = []
        for system, question in [
            (LONG_SYSTEM, "Where are the atlases?"),
            (OTHER_SYSTEM, "When do I plant beans?"),
            (OTHER_SYSTEM, "How deep should mulch be?"),
            (LONG_SYSTEM, "Do you lend poetry books?"),
        ]:
            result = await backend.create_message(params(system, question))
            reads.append(result["usage"]["cache_read_input_tokens"])
    finally:
        await backend.aclose()
    assert reads[0] == 0 and reads[1] == 0
    assert reads[2] > 400 and reads[3] > 400, reads
