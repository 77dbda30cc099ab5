"""The log-prob scoring engine against a plain full-sequence forward pass."""

import pytest
import torch

from meditron.infer.scoring import LogProbScorer, ScoreRequest, common_prefix
from meditron.model.config import preset
from meditron.model.llama import Transformer


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = Transformer(preset("tiny-gqa"))
    m.init_weights(seed=1, std=0.3)
    return m.eval()


def reference(model, req):
    with torch.inference_mode():
        conts = []
        for c in req.continuations:
            lp = torch.log_softmax(model(torch.tensor([req.context + c])).float(), -1)[0]
            conts.append(sum(lp[len(req.context) - 1 + k, t].item() for k, t in enumerate(c)))
        last = torch.log_softmax(model(torch.tensor([req.context])).float(), -1)[0, -1]
        return conts, last[req.candidates].tolist() if req.candidates else []


def make_requests(prefix, n=7):
    g = torch.Generator().manual_seed(5)
    reqs = []
    for i in range(n):
        ctx = prefix + torch.randint(3, 500, (3 + 4 * i,), generator=g).tolist()
        conts = [torch.randint(3, 500, (1 + (i + j) % 4,), generator=g).tolist() for j in range(1 + i % 4)]
        reqs.append(ScoreRequest(ctx, conts, candidates=[5, 9, 11]))
    return reqs


@pytest.mark.parametrize("use_prefix, budget", [(False, 40), (True, 40), (True, 4096), (False, 4096), (False, 1)])
def test_matches_full_forward(model, use_prefix, budget):
    prefix = list(range(20, 40))
    reqs = make_requests(prefix)
    scorer = LogProbScorer(model, max_batch_tokens=budget)
    got = scorer.score(reqs, prefix=prefix if use_prefix else None)
    for req, res in zip(reqs, got):
        conts, cands = reference(model, req)
        assert res.continuation_logprobs == pytest.approx(conts, abs=2e-4)
        assert res.candidate_logprobs == pytest.approx(cands, abs=2e-4)
    if budget == 4096:  # every request in one packed forward pass
        assert scorer.stats["batches"] == 1
    if use_prefix:
        assert scorer.stats["prefix_tokens"] == len(prefix)  # encoded once for all batches
        assert scorer.stats["forward_tokens"] < sum(len(r.context) for r in reqs)


def test_single_token_continuations_need_one_logit_row_per_request(model):
    reqs = [ScoreRequest(list(range(3, 3 + 10 + i)), [[7], [8], [9], [10]]) for i in range(5)]
    scorer = LogProbScorer(model)
    scorer.score(reqs)
    assert scorer.stats["logit_rows"] == 5
    assert scorer.stats["forward_tokens"] == sum(len(r.context) for r in reqs)


def test_common_prefix():
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == [1, 2]
    assert common_prefix([[1], [2]]) == []
    assert common_prefix([]) == []
