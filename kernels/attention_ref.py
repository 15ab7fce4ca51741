"""Plain-PyTorch causal GQA attention over a flat varlen batch and a block-table KV cache.

The cache layout is paged: k_cache / v_cache are (num_blocks, block_size, KV, D) and sequence b's
token at position p lives in row `block_tables[b, p // block_size] * block_size + p % block_size`.
A contiguous cache is the special case block_size = max_len, one block per sequence.
Scores, softmax and the weighted sum run in fp32; outputs are cast to q.dtype.
Not covered: sliding windows, soft-capping, alibi.
"""

from __future__ import annotations

import torch


def store_kv(
    k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Write the new keys/values into the cache.

    k, v (T, KV, D); k_cache, v_cache (num_blocks, block_size, KV, D), written in place;
    slot_mapping (T,) int64 flat row (block * block_size + offset) per token, -1 = do not store.
    """
    keep = slot_mapping >= 0  # (T,)
    rows = slot_mapping[keep]
    k_cache.view(-1, *k_cache.shape[2:])[rows] = k[keep].to(k_cache.dtype)
    v_cache.view(-1, *v_cache.shape[2:])[rows] = v[keep].to(v_cache.dtype)


def _cache_rows(block_row: torch.Tensor, n: int, block_size: int) -> torch.Tensor:
    pos = torch.arange(n, device=block_row.device)  # (n,)
    return block_row[pos // block_size].long() * block_size + pos % block_size  # (n,)


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    """q (B, n, Hq, D); keys, values (B, S, KV, D); mask (B, n, S) True = visible -> (B, n, Hq, D) fp32."""
    b, n, hq, d = q.shape
    kv = keys.shape[2]
    qg = q.float().view(b, n, kv, hq // kv, d)  # (B, n, KV, G, D)
    scores = torch.einsum("bnkgd,bskd->bkgns", qg, keys.float()) * scale  # (B, KV, G, n, S)
    scores = scores.masked_fill(~mask[:, None, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bkgns,bskd->bnkgd", probs, values.float())  # (B, n, KV, G, D)
    return out.reshape(b, n, hq, d)


def attention_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
) -> torch.Tensor:
    """Causal attention for a flat batch of query chunks (prefill, chunked prefill, mixed with decode).

    B sequences, T tokens, Hq query heads, KV kv heads, D head dim.
    q (T, Hq, D); k, v (T, KV, D) this step's keys/values; cu_seqlens (B+1,) int32 query offsets;
    seq_lens (B,) int32 keys visible to each sequence's last query (cached context + new tokens);
    block_tables (B, max_blocks) int32. With k_cache None the keys are k, v themselves (no context:
    seq_lens must equal the query lengths); otherwise they are read from the cache, which already holds
    this step's k, v (store_kv ran first). Query i of sequence b sits at position seq_lens[b] - n_b + i.
    Returns (T, Hq, D) in q.dtype.
    """
    out = torch.empty_like(q)  # (T, Hq, D)
    bounds, lens = cu_seqlens.tolist(), seq_lens.tolist()
    for b, total in enumerate(lens):
        s, e = bounds[b], bounds[b + 1]
        if e == s:
            continue
        if k_cache is None:
            keys, values = k[s:e], v[s:e]  # (S, KV, D)
        else:
            rows = _cache_rows(block_tables[b], total, k_cache.shape[1])
            keys = k_cache.view(-1, *k_cache.shape[2:])[rows]  # (S, KV, D)
            values = v_cache.view(-1, *v_cache.shape[2:])[rows]
        qpos = torch.arange(total - (e - s), total, device=q.device)  # (n,)
        mask = torch.arange(total, device=q.device)[None, :] <= qpos[:, None]  # (n, S)
        out[s:e] = _attend(q[None, s:e], keys[None], values[None], mask[None], scale)[0].to(q.dtype)
    return out


def attention_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor | None,
    v_cache: torch.Tensor | None,
    cu_seqlens: torch.Tensor,
    seq_lens: torch.Tensor,
    block_tables: torch.Tensor,
    max_query_len: int,
    max_seq_len: int,
    scale: float,
) -> torch.Tensor:
    """One new token per sequence (T = B), attending to all seq_lens[b] cached keys; same arguments as
    attention_prefill (cu_seqlens is then arange(B + 1)). Batched over a padded (B, max_seq_len) gather.
    Returns (B, Hq, D) in q.dtype.
    """
    if k_cache is None:  # no context: each token sees only itself
        keys, values = k[:, None], v[:, None]  # (B, 1, KV, D)
        mask = torch.ones(q.shape[0], 1, 1, dtype=torch.bool, device=q.device)
    else:
        bs = k_cache.shape[1]
        pos = torch.arange(max_seq_len, device=q.device)  # (S,)
        pos = torch.minimum(pos[None, :], (seq_lens.long() - 1)[:, None])  # (B, S), padding re-reads the last row
        rows = block_tables.long().gather(1, pos // bs) * bs + pos % bs  # (B, S)
        keys = k_cache.view(-1, *k_cache.shape[2:])[rows]  # (B, S, KV, D)
        values = v_cache.view(-1, *v_cache.shape[2:])[rows]
        mask = (torch.arange(max_seq_len, device=q.device)[None, :] < seq_lens[:, None])[:, None]  # (B, 1, S)
    return _attend(q[:, None], keys, values, mask, scale)[:, 0].to(q.dtype)
