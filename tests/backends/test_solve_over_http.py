"""`rsa.solve(problem, backend=URL)` end to end over real HTTP (loopback fake vLLM server)."""

from __future__ import annotations

import rsa
from rsa.prompts import TRUNCATION_MARKER


def reply(prompt: str, body: dict) -> str:
    steps = " ".join(f"step{i}" for i in range(30))
    return f"<think>{steps}</think>The answer is \\boxed{{{'7' if 'Candidate' in prompt else '5'}}}"


def test_solve_with_url_and_replica_list(serve_fake):
    fake_a, url_a = serve_fake(reply=reply)
    fake_b, url_b = serve_fake(reply=reply)
    result = rsa.solve("What is 3 + 4?", backend=f"{url_a}/v1", population=4, aggregation_size=2, rounds=1,
                       tail_tokens=8, seed=0)
    assert result.answer == "7" and result.share == 1.0
    assert [c.answer for c in result.stages[0].candidates] == ["5"] * 4
    assert all(c.tail.startswith(TRUNCATION_MARKER) and c.tail_tokens == 8 for c in result.stages[0].candidates)
    assert len(fake_a.requests) == 8
    # a list of replicas: one problem's requests stay on one replica (affinity)
    rsa.solve("What is 3 + 4?", backend=[f"{url_a}/v1", f"{url_b}/v1"], population=3, aggregation_size=2,
              rounds=1, seed=1)
    assert sorted([len(fake_a.requests) - 8, len(fake_b.requests)]) == [0, 6]
