"""lm-evaluation-harness's `local-completions` model pointed at `gpt2 serve`: its log-likelihoods of LAMBADA's last
words (tokenized through the server's /tokenize, scored through echo + logprobs) equal `gpt2 eval`'s own scores of
the same passages with the same model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import GPT2_BPE, SHARED

from test_serve import Server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
LIMIT = 6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from gpt2.model import GPT, GPTConfig
    from gpt2.tokenizer import Tokenizer
    from gpt2.weights import save_model

    directory = tmp_path_factory.mktemp("lm-eval-model")
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=512))
    save_model(model, directory, Tokenizer.load(GPT2_BPE))
    return directory


def test_lm_eval_local_completions_scores_equal_gpt2_eval(model_dir, tmp_path, cli):
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from gpt2.evaluate import datasets as D
    from gpt2.evaluate import detokenize
    from gpt2.evaluate.cloze import split_last_word

    lambada = SHARED / "lambada" / "lambada_test.jsonl"
    if not lambada.exists():
        pytest.skip(f"needs {lambada}")
    r = cli("eval", "--model", str(model_dir), "--tasks", "lambada", "--limit", str(LIMIT), "--out", str(tmp_path / "eval"),
            "--data-dir", str(SHARED), "--threads", "1")
    assert r.returncode == 0, r.stderr
    ours = [json.loads(line) for line in next((tmp_path / "eval" / "tasks").glob("lambada*.samples.jsonl")).read_text().splitlines()]
    assert len(ours) == LIMIT

    pairs = [split_last_word(detokenize.lambada(p)) for p in D.load_lambada(lambada)[:LIMIT]]
    s = Server(model_dir)
    try:
        lm = LocalCompletionsAPI(base_url=s.url + "/v1/completions", model=s.state.model_name, tokenizer_backend="remote",
                                 max_length=512, num_concurrent=4, max_retries=1)
        requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
        theirs = lm.loglikelihood(requests)
    finally:
        s.stop()
    assert [round(lp, 3) for lp, _ in theirs] == pytest.approx([round(o["logprob"], 3) for o in ours], abs=2e-3)
    assert [lp for lp, _ in theirs] == pytest.approx([o["logprob"] for o in ours], rel=1e-4, abs=1e-4)
    assert [greedy for _, greedy in theirs] == [o["greedy"] for o in ours]
