"""kdlib.decoding: a language model writes text one token at a time, reusing its keys and values."""
import pytest
import torch
from torch import nn

import kdlib as kd
from kdlib.decoding import cached_forward, generate, written_windows


def small_lm(seed=0, dim=16, depth=2, context=16):
    torch.manual_seed(seed)
    return kd.models.byte_transformer(dim=dim, depth=depth, heads=2, context=context)


class NoCache(nn.Module):
    """The same model seen as any model: generate must run it whole at every step."""

    def __init__(self, model):
        super().__init__()
        self.model, self.context = model, model.context

    def forward(self, x):
        return self.model(x)


@torch.no_grad()
def test_the_cached_forward_gives_the_full_forwards_logits_a_prompt_then_a_token_at_a_time():
    model = small_lm().eval()
    x = torch.randint(0, 256, (3, 16), generator=torch.Generator().manual_seed(0))
    cache = []
    parts = [cached_forward(model, x[:, :5], cache)] + [cached_forward(model, x[:, i: i + 1], cache)
                                                        for i in range(5, 16)]
    torch.testing.assert_close(torch.cat(parts, 1), model(x), atol=1e-5, rtol=1e-5)
    assert len(cache) == 2 and cache[0][0].shape == (3, 2, 16, 8)  # (B, heads, positions, head_dim)
    with pytest.raises(ValueError, match="context of 16"):
        cached_forward(model, x[:, :1], cache)


def test_generate_draws_the_same_tokens_with_the_cache_as_by_the_full_forward():
    model = small_lm(seed=1)
    prompt = torch.randint(0, 256, (4, 3), generator=torch.Generator().manual_seed(1))
    # 20 tokens: past the context of 16, where the cache stops and the last 16 tokens run whole
    fast = generate(model, prompt, 20, T=1.3, generator=torch.Generator().manual_seed(2))
    slow = generate(NoCache(model), prompt, 20, T=1.3, generator=torch.Generator().manual_seed(2))
    assert fast.shape == (4, 23) and torch.equal(fast[:, :3], prompt) and torch.equal(fast, slow)
    assert model.training  # its mode given back


def test_generate_refuses_an_empty_or_float_prompt_and_a_bad_n_or_T():
    model = small_lm()
    for bad in (torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 3), torch.zeros(3, dtype=torch.long)):
        with pytest.raises(ValueError, match="tokens must be int64"):
            generate(model, bad, 3)
    with pytest.raises(ValueError, match="n must"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="T must"):
        generate(model, torch.zeros(1, 2, dtype=torch.long), 2, T=-1.0)


def test_written_windows_keep_the_prompt_and_pair_each_token_with_the_next():
    x, y = kd.text.to_sequences(b"abcdefghij" * 20, 12, n=6)
    nx, ny = written_windows(small_lm(seed=2), x, y, prompt=5, generator=torch.Generator().manual_seed(0))
    assert nx.shape == ny.shape == (6, 12)
    assert torch.equal(nx[:, :5], x[:, :5])             # the prompt is the corpus's
    assert torch.equal(ny[:, :-1], nx[:, 1:])           # y is x shifted by one, as in to_sequences
    assert not torch.equal(nx, x)                       # the rest is the model's (uniform-ish: not the corpus)
    for bad in (0, 13, 2.0):
        with pytest.raises(ValueError, match=r"prompt must be an integer in \[1, 12\]"):
            written_windows(small_lm(), x, y, prompt=bad)
