"""K/V block and CCA state-slot bookkeeping of the paged cache (torch-free).

The cache holds `num_blocks` K/V blocks of `block_size` tokens and `num_slots` constant-size CCA state
rows. A running sequence owns one state slot and a block table covering its computed tokens. Blocks
carry reference counts so a block could be shared (a forked sequence); without prefix caching
(ZAYA1's CCA state makes a shared prefix unsafe to resume from) every count is 0 or 1 today.
"""

from __future__ import annotations

from collections import deque

from .sequence import Sequence


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, num_slots: int) -> None:
        if num_blocks < 1 or block_size < 1 or num_slots < 1:
            raise ValueError(f"need >= 1 block, block size and slot, got {num_blocks}, {block_size}, {num_slots}")
        self.num_blocks, self.block_size, self.num_slots = num_blocks, block_size, num_slots
        self.ref_counts = [0] * num_blocks
        self.free_blocks: deque[int] = deque(range(num_blocks))
        self.free_slots: deque[int] = deque(range(num_slots))

    # ---- queries ---------------------------------------------------------------------------
    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def blocks_needed(self, seq: Sequence, num_tokens: int) -> int:
        """New blocks `seq` needs so its table covers `num_tokens` tokens."""
        return max(0, self.blocks_for(num_tokens) - len(seq.block_table))

    def can_grow(self, seq: Sequence, num_tokens: int) -> bool:
        return self.blocks_needed(seq, num_tokens) <= len(self.free_blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_blocks)

    @property
    def usage(self) -> float:
        """Fraction of K/V blocks in use."""
        return 1.0 - len(self.free_blocks) / self.num_blocks

    # ---- changes ---------------------------------------------------------------------------
    def grow(self, seq: Sequence, num_tokens: int) -> None:
        """Extend seq's block table to cover `num_tokens` tokens; the caller checked `can_grow`."""
        need = self.blocks_needed(seq, num_tokens)
        if need > len(self.free_blocks):
            raise RuntimeError(f"{need} blocks needed, {len(self.free_blocks)} free")
        for _ in range(need):
            block = self.free_blocks.popleft()
            assert self.ref_counts[block] == 0
            self.ref_counts[block] = 1
            seq.block_table.append(block)

    def fork(self, parent: Sequence, child: Sequence) -> None:
        """Share parent's blocks with child (copy-free); each shared block's count goes up."""
        for block in parent.block_table:
            self.ref_counts[block] += 1
        child.block_table = list(parent.block_table)

    def take_slot(self, seq: Sequence) -> None:
        if seq.state_slot is None:
            if not self.free_slots:
                raise RuntimeError("no free CCA state slot")
            seq.state_slot = self.free_slots.popleft()

    def release(self, seq: Sequence) -> None:
        """Give back seq's blocks (those no other sequence references) and its state slot."""
        for block in reversed(seq.block_table):
            self.ref_counts[block] -= 1
            assert self.ref_counts[block] >= 0
            if self.ref_counts[block] == 0:
                self.free_blocks.append(block)
        seq.block_table = []
        if seq.state_slot is not None:
            self.free_slots.append(seq.state_slot)
            seq.state_slot = None
