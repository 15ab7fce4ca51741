"""Per-step forward metadata and the per-sequence cache the ZAYA1 model reads and writes.

The model sees one `ForwardContext` per step: how the flat token batch splits into sequences,
where each sequence's K/V rows and CCA state live, and (optionally) the cache object. The cache
protocol is deliberately small so a paged cache can implement it:

    block_size                 tokens per K/V block
    kv(layer) -> (k, v)        each (num_blocks, block_size, KV, D), written by ops.store_kv
    conv_state(layer)          (num_slots, C, W)  last W raw [Q0; K0] columns of each sequence
    value_state(layer)         (num_slots, VD)    last delayed-value projection of each sequence
    nbytes                     bytes held

`ContiguousCache` is the simple case: one block of `max_len` tokens per sequence slot, so the block
table of the sequence in slot s is [s]. Slot bookkeeping (which sequence owns which slot) is the
caller's; a sequence starting over in a reused slot is marked `fresh` and reads zero state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch


class KVStateCache(Protocol):
    block_size: int

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]: ...
    def conv_state(self, layer: int) -> torch.Tensor: ...
    def value_state(self, layer: int) -> torch.Tensor: ...
    @property
    def nbytes(self) -> int: ...


@dataclass(slots=True, frozen=True)
class ForwardContext:
    """Metadata of one forward step over T flat tokens from B sequences (built on the host, once)."""

    cu_seqlens: torch.Tensor  # (B+1,) int32 offsets of each sequence's new tokens in the flat batch
    context_lens: torch.Tensor  # (B,) int32 tokens of the sequence already cached before this step
    seq_lens: torch.Tensor  # (B,) int32 context_lens + new tokens
    state_slots: torch.Tensor  # (B,) int64 row of conv_state / value_state
    fresh: torch.Tensor  # (B,) bool: sequence starts here, its CCA state is read as zeros
    slot_mapping: torch.Tensor  # (T,) int64 K/V row (block * block_size + offset) of each new token
    block_tables: torch.Tensor  # (B, max_blocks) int32 K/V blocks of each sequence
    max_query_len: int
    max_seq_len: int
    is_decode: bool  # every sequence brings exactly one token
    cache: KVStateCache | None = None  # None: no cache, every sequence must be fresh

    @classmethod
    def build(
        cls,
        query_lens: Sequence[int],
        context_lens: Sequence[int],
        state_slots: Sequence[int],
        block_tables: Sequence[Sequence[int]] | None = None,
        cache: KVStateCache | None = None,
        fresh: Sequence[bool] | None = None,
        device: torch.device | str = "cpu",
    ) -> ForwardContext:
        """From host lists. `fresh` defaults to context_len == 0; block_tables is needed with a cache."""
        if not (len(query_lens) == len(context_lens) == len(state_slots)) or not query_lens:
            raise ValueError("query_lens, context_lens and state_slots need one entry per sequence")
        if min(query_lens) < 1 or min(context_lens) < 0:
            raise ValueError(f"bad lengths: query_lens={list(query_lens)}, context_lens={list(context_lens)}")
        fresh = [c == 0 for c in context_lens] if fresh is None else list(fresh)
        seq_lens = [q + c for q, c in zip(query_lens, context_lens)]
        cu = [0]
        for q in query_lens:
            cu.append(cu[-1] + q)
        if cache is None:
            if any(context_lens) or not all(fresh):
                raise ValueError("without a cache every sequence must start fresh with no context")
            tables: list[list[int]] = [[0] for _ in query_lens]
        else:
            if block_tables is None:
                raise ValueError("block_tables are required with a cache")
            tables = [list(row) for row in block_tables]
            for row, s in zip(tables, seq_lens):
                if len(row) * cache.block_size < s:
                    raise ValueError(f"block table {row} holds {len(row) * cache.block_size} tokens, sequence needs {s}")
        width = max(len(row) for row in tables)

        def tensor(data: object, dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor(data, dtype=dtype, device=device)

        table_t = tensor([row + [0] * (width - len(row)) for row in tables], torch.int32)  # (B, max_blocks)
        cu_t, ctx_t = tensor(cu, torch.int32), tensor(list(context_lens), torch.int32)
        if cache is None:
            slot_mapping = tensor([], torch.int64)
        else:  # K/V row of every new token, vectorised over the flat batch
            bs = cache.block_size
            seq = torch.repeat_interleave(torch.arange(len(cu) - 1, device=device), cu_t.diff().long(),
                                          output_size=cu[-1])  # (T,)
            pos = (torch.arange(cu[-1], device=device) - cu_t[seq] + ctx_t[seq]).long()  # (T,)
            slot_mapping = table_t[seq, pos // bs].long() * bs + pos % bs  # (T,)

        return cls(
            cu_seqlens=cu_t,
            context_lens=ctx_t,
            seq_lens=tensor(seq_lens, torch.int32),
            state_slots=tensor(list(state_slots), torch.int64),
            fresh=tensor(fresh, torch.bool),
            slot_mapping=slot_mapping,
            block_tables=table_t,
            max_query_len=max(query_lens),
            max_seq_len=max(seq_lens),
            is_decode=all(q == 1 for q in query_lens),
            cache=cache,
        )


class _CacheTensors:
    """The KVStateCache accessors over four per-layer tensors `k`, `v`, `conv`, `value`, allocated
    by `_allocate` from the subclass's block and state-row counts."""

    k: torch.Tensor
    v: torch.Tensor
    conv: torch.Tensor
    value: torch.Tensor

    def _allocate(self, num_layers: int, num_blocks: int, block_size: int, num_slots: int, num_kv_heads: int,
                  head_dim: int, conv_channels: int, conv_width: int, value_dim: int, dtype: torch.dtype,
                  state_dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (num_layers, num_blocks, block_size, num_kv_heads, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, N, bs, KV, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.conv = torch.zeros(num_layers, num_slots, conv_channels, conv_width, dtype=state_dtype, device=device)
        self.value = torch.zeros(num_layers, num_slots, value_dim, dtype=state_dtype, device=device)

    def kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer], self.v[layer]

    def conv_state(self, layer: int) -> torch.Tensor:
        return self.conv[layer]

    def value_state(self, layer: int) -> torch.Tensor:
        return self.value[layer]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.k, self.v, self.conv, self.value))


class ContiguousCache(_CacheTensors):
    """One contiguous (max_len)-token K/V region and one CCA state row per sequence slot, per layer."""

    def __init__(
        self,
        num_layers: int,
        max_seqs: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        conv_channels: int,
        conv_width: int,
        value_dim: int,
        *,
        dtype: torch.dtype = torch.float32,
        state_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        self.max_seqs, self.max_len, self.block_size = max_seqs, max_len, max_len
        # one block of max_len tokens per slot: k, v (L, S, max_len, KV, D)
        self._allocate(num_layers, max_seqs, max_len, max_seqs, num_kv_heads, head_dim, conv_channels, conv_width,
                       value_dim, dtype, state_dtype, device)

    @classmethod
    def for_config(cls, config, max_seqs: int, max_len: int, **kw) -> ContiguousCache:  # noqa: ANN001
        """Sized for a Zaya1Config."""
        return cls(config.num_hidden_layers, max_seqs, max_len, config.num_key_value_heads, config.head_dim,
                   config.conv_channels, config.conv_state_width, config.value_state_dim, **kw)

    def context(
        self,
        query_lens: Sequence[int],
        context_lens: Sequence[int],
        slots: Sequence[int],
        fresh: Sequence[bool] | None = None,
    ) -> ForwardContext:
        """Step metadata for sequences living in `slots` (sequence i uses K/V block and state row slots[i])."""
        if len(set(slots)) != len(slots) or not all(0 <= s < self.max_seqs for s in slots):
            raise ValueError(f"slots must be distinct and in [0, {self.max_seqs}), got {list(slots)}")
        return ForwardContext.build(query_lens, context_lens, slots, [[s] for s in slots],
                                    cache=self, fresh=fresh, device=self.k.device)


class PagedCache(_CacheTensors):
    """`num_blocks` shared K/V blocks of `block_size` tokens and `num_slots` CCA state rows, per layer.

    Which blocks and which state row belong to a sequence is the engine's block manager's business;
    this class only holds the tensors and their sizes.
    """

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, num_slots: int, num_kv_heads: int,
                 head_dim: int, conv_channels: int, conv_width: int, value_dim: int, *,
                 dtype: torch.dtype = torch.float32, state_dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.num_blocks, self.block_size, self.num_slots = num_blocks, block_size, num_slots
        self._allocate(num_layers, num_blocks, block_size, num_slots, num_kv_heads, head_dim, conv_channels,
                       conv_width, value_dim, dtype, state_dtype, device)

    @staticmethod
    def kv_bytes_per_token(config, dtype: torch.dtype) -> int:  # noqa: ANN001 - Zaya1Config
        """K + V bytes one token takes in one layer: 2 x kv_heads x head_dim x dtype bytes."""
        return 2 * config.num_key_value_heads * config.head_dim * dtype.itemsize

    @staticmethod
    def state_bytes_per_seq(config, state_dtype: torch.dtype) -> int:  # noqa: ANN001
        """Constant CCA state of one sequence over all layers (conv columns + delayed value)."""
        per_layer = config.conv_channels * config.conv_state_width + config.value_state_dim
        return per_layer * state_dtype.itemsize * config.num_hidden_layers

    @classmethod
    def for_budget(cls, config, memory_budget: int, block_size: int, num_slots: int, *,  # noqa: ANN001
                   dtype: torch.dtype = torch.float32, state_dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> PagedCache:
        """As many blocks as fit in `memory_budget` bytes after the `num_slots` state rows."""
        block_bytes = cls.kv_bytes_per_token(config, dtype) * block_size * config.num_hidden_layers
        num_blocks = (memory_budget - num_slots * cls.state_bytes_per_seq(config, state_dtype)) // block_bytes
        if num_blocks < 1:
            raise ValueError(f"memory_budget={memory_budget} bytes holds no K/V block after {num_slots} state slots "
                             f"(one block: {block_bytes} B)")
        return cls(config.num_hidden_layers, int(num_blocks), block_size, num_slots, config.num_key_value_heads,
                   config.head_dim, config.conv_channels, config.conv_state_width, config.value_state_dim,
                   dtype=dtype, state_dtype=state_dtype, device=device)
