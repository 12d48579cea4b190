"""Writing text with a language model: one token at a time, each drawn from softmax(z / T).

    tokens = generate(model, prompt, n=48, T=1.0)   # prompt (B, P) -> (B, P + n)

A language model's forward pass over L tokens gives the next token's logits at every position; to
write n tokens, the naive loop runs it n times over the whole text so far, and so computes the
keys and values of every earlier position again at every step. For a kdlib ByteTransformer,
generate keeps them (a key-value cache): each step runs the layers on the one new token, whose
query attends to the cached keys and values of the positions before it. The arithmetic is the
model's own, layer for layer (its weights, its norms, its activation), so the logits equal those
of the full forward pass up to float rounding (a test checks it), at a cost per step that no
longer grows with the text. Past the model's context the positions would shift, so the cache
stops there and each further step runs the model on the last `context` tokens, as any model
without a cache does.

Sequence-level distillation (the teacher writes the student's training text) and on-policy
distillation (the student writes, the teacher scores) both write text inside a training run; on a
CPU the cache makes that 5-10x cheaper than the naive loop for the book's models.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import check_temperature, softmax_t
from .models import ByteTransformer, check_positive_int, device_of, eval_mode

__all__ = ["generate", "written_windows", "cached_forward"]

# per layer: (keys, values), each (B, heads, positions so far, head_dim)
Cache = List[Tuple[Tensor, Tensor]]


def cached_forward(model: ByteTransformer, x: Tensor, cache: Cache) -> Tensor:
    """The logits (B, l, vocab) of l new tokens x (B, l) that follow the cached positions.

    Each layer is the pre-norm layer of nn.TransformerEncoderLayer(norm_first=True) written out:
        h = h + W_o · attention(norm1(h)),   attention over the cache's keys and values and the
                                             new ones (a new token sees itself and what precedes)
        h = h + linear2(act(linear1(norm2(h))))
    cache: one (keys, values) pair per layer, extended in place; empty ([]) for a fresh text.
    """
    past = cache[0][0].shape[2] if cache else 0
    L = past + x.shape[1]
    if L > model.context:
        raise ValueError(f"the text would be {L} tokens long, past the model's context of {model.context}")
    h = model.embed(x) + model.pos_embed[:, past:L]                            # (B, l, dim)
    # new token i (position past + i) may attend to the positions 0 .. past + i
    allowed = torch.ones(x.shape[1], L, dtype=torch.bool, device=x.device).tril(past)
    for depth, layer in enumerate(model.blocks.layers):
        attn = layer.self_attn
        heads, B, l = attn.num_heads, x.shape[0], x.shape[1]
        q, k, v = F.linear(layer.norm1(h), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(B, l, heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, heads, l, d)
        if depth < len(cache):
            k, v = torch.cat([cache[depth][0], k], 2), torch.cat([cache[depth][1], v], 2)
            cache[depth] = (k, v)
        else:
            cache.append((k, v))
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)       # softmax(q k^T / sqrt(d)) v
        h = h + attn.out_proj(a.transpose(1, 2).reshape(B, l, -1))
        h = h + layer.linear2(layer.activation(layer.linear1(layer.norm2(h))))
    return model.head(model.norm(h))


@torch.no_grad()
def generate(model: nn.Module, tokens: Tensor, n: int, T: float = 1.0,
             generator: Optional[torch.Generator] = None) -> Tensor:
    """tokens (B, P) int64 followed by n tokens drawn one at a time from the model: (B, P + n).

    Each step takes the logits z (B, V) of the last position and draws every row's next token from
    softmax(z / T) (T < 1 sharpens towards the most likely token, T > 1 flattens). The model is in
    eval mode while it writes and gets its own modes back. A ByteTransformer reuses its keys and
    values (cached_forward) while the text fits its context; any other model, and a text past the
    context, runs whole on the last `context` tokens (the model's attribute; all of them without
    one). generator: a torch.Generator on the model's device, for texts that repeat.
    """
    T = check_temperature(T)
    n = check_positive_int(n, "n")
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.dtype != torch.int64:
        raise ValueError(f"tokens must be int64 of shape (B, P) with P >= 1 (each row a prompt), got "
                         f"{tuple(tokens.shape)} {tokens.dtype}")
    device = device_of(model)
    tokens = tokens.to(device)
    context = getattr(model, "context", tokens.shape[1] + n)
    cached = isinstance(model, ByteTransformer)
    cache: Cache = []
    out = [tokens]
    with eval_mode(model):
        for step in range(n):
            length = tokens.shape[1] + step
            if cached and length <= context:
                # the prompt, then one new token a step
                logits = cached_forward(model, out[-1], cache)[:, -1]
            else:
                logits = model(torch.cat(out, 1)[:, -context:])[:, -1]  # (B, V)
            out.append(torch.multinomial(softmax_t(logits.float(), T), 1, generator=generator))
    return torch.cat(out, 1)


def written_windows(writer: nn.Module, x: Tensor, y: Tensor, prompt: int, T: float = 1.0,
                    generator: Optional[torch.Generator] = None, batch_size: int = 500) -> Tuple[Tensor, Tensor]:
    """Windows of tokens x, y (N, L), y the token after each of x's, rewritten by a model after their
    first `prompt` tokens: each window's text s = x then y's last token, (N, L + 1), keeps
    s[:, :prompt] and the writer draws the other L + 1 - prompt tokens at temperature T (generate),
    batch_size windows at a time. Returns the new (x, y) = (s[:, :-1], s[:, 1:]): the written
    tokens are y[:, prompt - 1:], the labels of positions prompt - 1 .. L - 1."""
    L = x.shape[1]
    if isinstance(prompt, bool) or not isinstance(prompt, int) or not 1 <= prompt <= L:
        raise ValueError(f"prompt must be an integer in [1, {L}] (the window's length), got {prompt!r}")
    text = torch.cat([x, y[:, -1:]], 1)
    out = torch.cat([generate(writer, text[i: i + batch_size, :prompt], L + 1 - prompt, T, generator)
                     for i in range(0, len(text), batch_size)]).to(x.device)
    return out[:, :-1].contiguous(), out[:, 1:].contiguous()
