"""Plain-PyTorch causal GQA attention over a flat varlen batch and a block-table KV cache.

The cache layout is paged: k_cache / v_cache are (num_blocks, block_size, KV, D) and sequence b's
token at position p lives in row `block_tables[b, p // block_size] * block_size + p % block_size`.
A contiguous cache is the special case block_size = max_len, one block per sequence.
Scores, softmax and the weighted sum run in fp32; outputs are cast to q.dtype.

CPU speed comes from never gathering K/V row by row: whole blocks are copied with one index_select,
decode-like queries (one new token) are batched in length-sorted groups so padding stays small, and
prefill chunks run torch's fused `scaled_dot_product_attention` per sequence (on fp32 copies).
Not covered: sliding windows, soft-capping, alibi.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


# decode queries attend in length-sorted groups of this many sequences, each padded to its own longest
DECODE_GROUP = 16


def _gather_blocks(cache: torch.Tensor, block_tables: torch.Tensor, num_keys: int) -> torch.Tensor:
    """cache (num_blocks, bs, KV, D); block_tables (B, max_blocks) -> (B, S, KV * D) fp32, the first
    S = ceil(num_keys / bs) * bs key rows of each sequence (rows past a sequence's length are junk)."""
    bs = cache.shape[1]
    nb = -(-num_keys // bs)
    flat = cache.view(cache.shape[0], -1)  # (num_blocks, bs * KV * D)
    blocks = flat.index_select(0, block_tables[:, :nb].reshape(-1).long())  # (B * nb, bs * KV * D)
    return blocks.view(block_tables.shape[0], nb * bs, -1).float()  # (B, S, KV * D)


def _decode_group(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq_lens: torch.Tensor,
                  block_tables: torch.Tensor, num_keys: int, scale: float) -> torch.Tensor:
    """One query per sequence over its cached keys. q (B, Hq, D); seq_lens (B,) <= num_keys -> (B, Hq, D) fp32.

    GQA without repeating K/V: each query row is placed in its own kv head's D columns of a zero
    (KV * D) row, so one batched matmul scores all heads against the packed (S, KV * D) key rows.
    """
    b, hq, d = q.shape
    kv = k_cache.shape[2]
    g = hq // kv
    keys = _gather_blocks(k_cache, block_tables, num_keys)  # (B, S, KV * D)
    values = _gather_blocks(v_cache, block_tables, num_keys)
    s = keys.shape[1]
    own_head = torch.eye(kv, dtype=torch.float32, device=q.device).view(1, kv, 1, kv, 1)
    q_wide = (q.float().view(b, kv, g, 1, d) * own_head).view(b, hq, kv * d)  # (B, Hq, KV * D) block-diagonal
    scores = torch.bmm(q_wide, keys.transpose(1, 2)).mul_(scale)  # (B, Hq, S)
    pad = torch.arange(s, device=q.device)[None, :] >= seq_lens[:, None]  # (B, S)
    probs = torch.softmax(scores.masked_fill_(pad[:, None], float("-inf")), dim=-1)  # (B, Hq, S)
    out = torch.bmm(probs, values).view(b, kv, g, kv, d)  # (B, KV, G, KV, D), all head pairs
    return out.diagonal(dim1=1, dim2=3).permute(0, 3, 1, 2).reshape(b, hq, d)  # (B, Hq, D) own head only


def _decode_rows(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, seq_lens: torch.Tensor,
                 block_tables: torch.Tensor, scale: float) -> torch.Tensor:
    """_decode_group over length-sorted groups of DECODE_GROUP sequences. -> (B, Hq, D) fp32."""
    lens = seq_lens.tolist()
    if len(lens) <= DECODE_GROUP:
        return _decode_group(q, k_cache, v_cache, seq_lens, block_tables, max(lens), scale)
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)  # (B, Hq, D)
    order = sorted(range(len(lens)), key=lens.__getitem__)
    for start in range(0, len(order), DECODE_GROUP):
        group = order[start:start + DECODE_GROUP]
        rows = torch.tensor(group, device=q.device)  # (b,)
        out[rows] = _decode_group(q[rows], k_cache, v_cache, seq_lens[rows], block_tables[rows],
                                  lens[group[-1]], scale)
    return out


def _prefill_one(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scale: float) -> torch.Tensor:
    """n queries at the last n of S key positions, causal. q (n, Hq, D); keys, values (S, KV, D) -> (n, Hq, D) fp32."""
    n, s = q.shape[0], keys.shape[0]
    mask = None
    if n != s:  # queries continue a cached context: bottom-right aligned causal mask
        mask = torch.ones(n, s, dtype=torch.bool, device=q.device).tril(s - n)  # (n, S)
    out = F.scaled_dot_product_attention(  # (1, Hq, n, D)
        q.float().transpose(0, 1)[None], keys.float().transpose(0, 1)[None], values.float().transpose(0, 1)[None],
        attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True)
    return out[0].transpose(0, 1)


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
    return prefill_with(_decode_rows, q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, scale)


def prefill_with(decode_rows, q, k, v, k_cache, v_cache, cu_seqlens, seq_lens, block_tables, scale) -> torch.Tensor:
    """attention_prefill with `decode_rows` (signature of `_decode_rows`) for the one-query entries: the
    body every backend shares, so the C++ decode kernel serves mixed steps too."""
    out = torch.empty(q.shape, dtype=torch.float32, device=q.device)  # (T, Hq, D)
    bounds, lens = cu_seqlens.tolist(), seq_lens.tolist()
    singles = [b for b in range(len(lens)) if bounds[b + 1] - bounds[b] == 1 and k_cache is not None]
    if singles:  # decode entries of a mixed step: batched like attention_decode
        seqs = torch.tensor(singles, device=q.device)  # (b,)
        rows = cu_seqlens[:-1].long()[seqs]  # (b,)
        out[rows] = decode_rows(q[rows], k_cache, v_cache, seq_lens[seqs], block_tables[seqs], scale)
    single = set(singles)
    for b, total in enumerate(lens):
        s, e = bounds[b], bounds[b + 1]
        if e == s or b in single:
            continue
        if k_cache is None:
            keys, values = k[s:e], v[s:e]  # (S, KV, D)
        else:
            shape = (-1, *k_cache.shape[2:])
            keys = _gather_blocks(k_cache, block_tables[b:b + 1], total)[0, :total].view(shape)  # (S, KV, D)
            values = _gather_blocks(v_cache, block_tables[b:b + 1], total)[0, :total].view(shape)
        out[s:e] = _prefill_one(q[s:e], keys, values, scale)
    return out.to(q.dtype)


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
    attention_prefill (cu_seqlens is then arange(B + 1)). Batched over block gathers padded per group.
    Returns (B, Hq, D) in q.dtype.
    """
    if k_cache is None:  # no context: each token sees only itself, softmax of one score is 1
        return v.repeat_interleave(q.shape[1] // v.shape[1], dim=1).to(q.dtype)  # (B, Hq, D)
    return _decode_rows(q, k_cache, v_cache, seq_lens, block_tables, scale).to(q.dtype)
