"""Block manager and scheduler bookkeeping on fake sequences (no model, no torch in these modules)."""

from __future__ import annotations

import ast
import pathlib

import pytest

from rsa.backends.zaya1.block_manager import BlockManager
from rsa.backends.zaya1.sampling_params import SamplingParams
from rsa.backends.zaya1.scheduler import Scheduler
from rsa.backends.zaya1.sequence import Sequence, SequenceStatus

PKG = pathlib.Path(__file__).parents[2] / "backends" / "zaya1"


@pytest.mark.parametrize("name", ["sequence.py", "block_manager.py", "scheduler.py", "sampling_params.py"])
def test_bookkeeping_modules_do_not_import_torch(name):
    tree = ast.parse((PKG / name).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "torch" not in imported


def seq(n: int, max_tokens: int = 8, **kw) -> Sequence:
    return Sequence(list(range(1, n + 1)), SamplingParams(max_tokens=max_tokens, **kw))


def make(num_blocks=16, block_size=4, slots=8, max_seqs=8, budget=32, max_len=64, eos=(0,)) -> Scheduler:
    return Scheduler(BlockManager(num_blocks, block_size, slots), max_num_seqs=max_seqs,
                     max_num_batched_tokens=budget, max_model_len=max_len, eos_token_ids=eos)


def run(s: Scheduler, token: int = 7):
    """One step with a fake model that samples `token` for every sampling entry."""
    batch = s.schedule()
    got = s.postprocess(batch, [token] * sum(batch.samples))
    return batch, got


def test_block_manager_grow_release_and_ref_counts():
    bm = BlockManager(num_blocks=4, block_size=4, num_slots=2)
    a, b = seq(5), seq(3)
    assert bm.blocks_needed(a, 5) == 2 and bm.can_grow(a, 16) and not bm.can_grow(a, 17)
    bm.grow(a, 5)
    bm.take_slot(a)
    assert a.block_table == [0, 1] and a.state_slot == 0 and bm.num_free_blocks == 2 and bm.usage == 0.5
    bm.fork(a, b)
    assert bm.ref_counts[:2] == [2, 2]
    bm.release(a)
    assert bm.num_free_blocks == 2 and a.state_slot is None  # still held by b
    bm.release(b)
    assert bm.num_free_blocks == 4 and bm.ref_counts == [0] * 4
    with pytest.raises(RuntimeError):
        bm.grow(seq(1), 17)


def test_prefill_is_chunked_under_the_token_budget_and_decodes_go_first():
    s = make(budget=10)
    long, short = seq(23), seq(3)
    s.add(long)
    s.add(short)
    batch, got = run(s)
    assert batch.num_tokens == [10] and not got  # the head takes the whole budget, no sample yet
    batch, _ = run(s)
    assert batch.seqs == [long] and batch.num_tokens == [10]
    batch, got = run(s)  # 3 left of the long prompt, then the short one is admitted
    assert batch.num_tokens == [3, 3] and got == [long, short]
    assert long.output_ids == [7] and long.num_computed == 23
    batch, _ = run(s)
    assert batch.num_tokens == [1, 1] and batch.context_lens == [23, 3]
    late = seq(30)
    s.add(late)
    batch, _ = run(s)
    assert batch.seqs == [long, short, late] and batch.num_tokens == [1, 1, 8]  # decodes, then a chunk


def test_fifo_admission_respects_max_num_seqs():
    s = make(max_seqs=2)
    seqs = [seq(2, max_tokens=2) for _ in range(4)]
    for x in seqs:
        s.add(x)
    batch, _ = run(s)
    assert batch.seqs == seqs[:2] and [x.status for x in seqs[2:]] == [SequenceStatus.WAITING] * 2
    run(s)  # both finish by length
    assert [x.finish_reason for x in seqs[:2]] == ["length", "length"]
    batch, _ = run(s)
    assert batch.seqs == seqs[2:]


def test_preemption_frees_the_newest_and_requeues_it_first():
    s = make(num_blocks=4, block_size=4, budget=64)
    a, b = seq(4, max_tokens=8), seq(4, max_tokens=8)
    s.add(a)
    s.add(b)
    run(s)  # both prefilled: 1 block each, 5 tokens
    run(s)  # grow to 2 blocks each, computed 5
    assert s.blocks.num_free_blocks == 0
    for _ in range(4):
        run(s)  # a reaches 9 tokens: needs a 3rd block, none free -> b is preempted
    assert s.num_preemptions == 1 and b.num_preemptions == 1
    assert b.status is SequenceStatus.WAITING and s.waiting[0] is b and b.num_computed == 0 and not b.block_table
    assert b.state_slot is None and len(b) > 4  # keeps prompt + generated tokens for the re-prefill
    while s.has_work():
        run(s)
    assert a.output_ids == [7] * 8 and b.output_ids == [7] * 8


def test_a_sequence_preempts_itself_when_it_is_the_only_one():
    s = make(num_blocks=2, block_size=4, max_len=8)
    a = seq(4, max_tokens=4)
    s.add(a)
    while s.has_work():
        run(s)
    assert a.output_ids == [7] * 4 and s.num_preemptions == 0


def test_postprocess_stops():
    s = make()
    eos, stop_id, capped, ignoring = seq(2), seq(2, stop_token_ids=(9,)), seq(2, max_tokens=1), seq(2, ignore_eos=True)
    for x in (eos, stop_id, capped, ignoring):
        s.add(x)
    batch = s.schedule()
    s.postprocess(batch, [0, 9, 5, 0])
    assert (eos.finish_reason, eos.stop_token, eos.output_ids) == ("stop", 0, [])
    assert (stop_id.finish_reason, stop_id.stop_token) == ("stop", 9)
    assert (capped.finish_reason, capped.output_ids) == ("length", [5])
    assert not ignoring.is_finished and ignoring.output_ids == [0]
    assert s.generation_tokens_total == 4 and s.blocks.num_free_blocks == 15


def test_check_abort_and_duplicate_ids():
    s = make(num_blocks=4, block_size=4, max_len=64)
    assert "exceeds the context" in s.check(60, 8)
    assert "K/V blocks" in s.check(10, 7)
    assert s.check(10, 6) is None
    a = Sequence([1, 2], SamplingParams(max_tokens=4), request_id="r")
    s.add(a)
    with pytest.raises(ValueError, match="already"):
        s.add(Sequence([1], SamplingParams(max_tokens=4), request_id="r"))
    run(s)
    assert s.abort("r") is a and a.finish_reason == "abort" and s.blocks.num_free_blocks == 4
    assert s.abort("r") is None and not s.has_work()
