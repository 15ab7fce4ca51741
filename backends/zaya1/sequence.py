"""One request inside the engine: its tokens, how many are in the cache, and where they live.

Torch-free bookkeeping. `token_ids` holds prompt + generated tokens; `num_computed` of them have
their K/V in the sequence's blocks and their effect in its CCA state slot. A step that brings the
sequence up to `len(token_ids)` samples the next token from the last position; a shorter step is a
prefill chunk. After preemption `num_computed` is 0 again and the sequence re-prefills all of its
tokens (prompt and generated), which also recomputes its constant CCA state.
"""

from __future__ import annotations

import enum
import itertools
from typing import Any

from .sampling_params import SamplingParams

_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    __slots__ = ("seq_id", "request_id", "token_ids", "num_prompt_tokens", "num_computed", "block_table",
                 "state_slot", "params", "status", "finish_reason", "num_preemptions", "arrival", "text",
                 "detok", "stop_token", "user")

    def __init__(self, prompt_ids: list[int], params: SamplingParams, request_id: Any = None,
                 arrival: float = 0.0) -> None:
        if not prompt_ids:
            raise ValueError("a sequence needs at least one prompt token")
        self.seq_id = next(_ids)
        self.request_id = self.seq_id if request_id is None else request_id
        self.token_ids = list(prompt_ids)
        self.num_prompt_tokens = len(prompt_ids)
        self.num_computed = 0
        self.block_table: list[int] = []
        self.state_slot: int | None = None
        self.params = params
        self.status = SequenceStatus.WAITING
        self.finish_reason: str | None = None
        self.num_preemptions = 0
        self.arrival = arrival
        self.text = ""  # detokenized output so far (kept by the engine)
        self.detok = (0, 0)  # incremental detokenizer offsets into output_ids (prefix, read)
        self.stop_token: int | None = None  # the EOS / stop id that ended the sequence, not in the output
        self.user: Any = None  # free slot for the front end (stream offsets etc.)

    def __len__(self) -> int:
        return len(self.token_ids)

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, len={len(self)}, computed={self.num_computed}, "
                f"blocks={self.block_table}, slot={self.state_slot}, {self.status.value})")

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_uncomputed(self) -> int:
        """Tokens the next steps must run through the model before this sequence can sample."""
        return len(self.token_ids) - self.num_computed

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def append(self, token: int) -> None:
        self.token_ids.append(token)
