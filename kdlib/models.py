"""The teachers and students of the book: small, plain ``torch.nn`` models.

    MNIST (input (B, 1, 28, 28) or (B, 784), logits (B, 10))
        hinton_teacher   784-1200-1200-10 MLP with dropout     2,395,210 parameters
        hinton_student   784-800-800-10 MLP, no dropout        1,276,810 parameters

    CIFAR-10 (input (B, 3, 32, 32), logits (B, 10))
        cifar_large_cnn  labml's VGG-style "large" model      14,728,266 parameters
        cifar_small_cnn  labml's VGG-style "small" model         437,034 parameters
        cifar_resnet18   CIFAR-style ResNet-18                 11,173,962 parameters
        vit_tiny_cifar   small Vision Transformer, 4x4 patches  1,806,538 parameters

    Text (input (B, L) bytes, logits (B, L, 256) for the next byte)
        byte_transformer decoder-only transformer, 4 x 128        875,520 parameters

Every classifier returns logits z of shape (B, C), the language model (B, L, C); softmax and temperature live in
``kdlib.losses``. Build one by name with ``make_model("hinton_teacher")``.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from numbers import Integral, Real
from typing import Callable, Dict, Iterator, List, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = [
    "MLP",
    "hinton_teacher",
    "hinton_student",
    "cifar_large_cnn",
    "cifar_small_cnn",
    "BasicBlock",
    "CifarResNet",
    "cifar_resnet18",
    "VisionTransformer",
    "vit_tiny_cifar",
    "ByteTransformer",
    "byte_transformer",
    "count_params",
    "MODELS",
    "make_model",
]


# ---------------------------------------------------------------- input checks
def check_dropout(p: float, name: str = "dropout") -> float:
    """Return p as a float; raise unless 0 <= p < 1 (p = 1 would zero every activation)."""
    if isinstance(p, bool) or not isinstance(p, Real):
        raise TypeError(f"{name} must be a real number in [0, 1), got {type(p).__name__}")
    if not (0.0 <= p < 1.0):  # also False for NaN
        raise ValueError(f"{name} must be in [0, 1), got {p}")
    return float(p)


def check_positive_int(n: int, name: str) -> int:
    """Return n as an int; raise unless it is an integer >= 1."""
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"{name} must be an integer >= 1, got {type(n).__name__}")
    if n < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {n}")
    return int(n)


# ------------------------------------------------------------------ MNIST MLPs
class MLP(nn.Module):
    """A fully connected ReLU network that flattens its input first.

    x: (B, in_features) or any (B, *) with prod(*) = in_features, e.g. (B, 1, 28, 28)
    returns logits z: (B, num_classes)

    Layers: [Dropout(input_dropout)] -> (Linear -> ReLU -> [Dropout(dropout)]) per hidden
    width -> Linear. A dropout of 0 adds no layer at all, so the student holds no Dropout.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int,
                 dropout: float = 0.0, input_dropout: float = 0.0):
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        check_positive_int(num_classes, "num_classes")
        dropout = check_dropout(dropout, "dropout")
        input_dropout = check_dropout(input_dropout, "input_dropout")
        layers: List[nn.Module] = [nn.Flatten()]
        if input_dropout > 0:
            layers.append(nn.Dropout(input_dropout))
        width = self.in_features
        for h in hidden:
            layers += [nn.Linear(width, check_positive_int(h, "hidden width")), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or math.prod(x.shape[1:]) != self.in_features:
            # a clearer message than Linear's "mat1 and mat2 shapes cannot be multiplied"
            raise ValueError(
                f"x must have shape (B, {self.in_features}) or (B, *) with {self.in_features} "
                f"values per example, got {tuple(x.shape)}")
        return self.net(x)


def hinton_teacher(dropout: float = 0.5, input_dropout: float = 0.2,
                   in_features: int = 784, num_classes: int = 10) -> nn.Module:
    """Hinton, Vinyals & Dean (2015)'s MNIST teacher: 784-1200-1200-10, ReLU, dropout.

    x: (B, 1, 28, 28) or (B, 784)  ->  logits (B, 10)

    Dropout on the input (``input_dropout``, 0.2 as in Hinton et al. 2012's dropout nets)
    and after each hidden layer (``dropout``, 0.5). The paper reports 67 test errors.
    Parameters with the defaults: (784*1200 + 1200) + (1200*1200 + 1200) + (1200*10 + 10)
    = 2,395,210.
    """
    return MLP(in_features, (1200, 1200), num_classes, dropout=dropout, input_dropout=input_dropout)


def hinton_student(in_features: int = 784, num_classes: int = 10) -> nn.Module:
    """Hinton et al. (2015)'s MNIST student: 784-800-800-10, ReLU, no dropout.

    x: (B, 1, 28, 28) or (B, 784)  ->  logits (B, 10)

    146 test errors trained alone, 74 when distilled at T = 20 (the paper's numbers).
    Parameters with the defaults: (784*800 + 800) + (800*800 + 800) + (800*10 + 10) = 1,276,810.
    """
    return MLP(in_features, (800, 800), num_classes)


# ------------------------------------------------------------- CIFAR-10 VGG CNNs
def _vgg(blocks: Sequence[Sequence[int]], num_classes: int, dropout: float,
         track_running_stats: bool) -> nn.Sequential:
    """labml's ``CIFAR10VGGModel``: 5 blocks of 3x3 convs, each block ending in a 2x2 max-pool.

    Each conv: [Dropout(dropout)] -> Conv2d(3x3, padding 1) -> BatchNorm2d -> ReLU.
    Five poolings take 32x32 to 1x1, so the head is a single Linear(C_last, num_classes).
    x: (B, 3, 32, 32) -> (B, C_last, 1, 1) -> logits (B, num_classes)
    """
    check_positive_int(num_classes, "num_classes")
    dropout = check_dropout(dropout, "dropout")
    layers: List[nn.Module] = []
    in_ch = 3
    for block in blocks:
        for out_ch in block:
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
                       nn.BatchNorm2d(out_ch, track_running_stats=track_running_stats),
                       nn.ReLU(inplace=True)]
            in_ch = out_ch
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    layers += [nn.Flatten(), nn.Linear(in_ch, num_classes)]
    return nn.Sequential(*layers)


def cifar_large_cnn(num_classes: int = 10, dropout: float = 0.1,
                    track_running_stats: bool = True) -> nn.Module:
    """The "large" teacher of labml's distillation experiment (``labml_nn/distillation/large.py``).

    x: (B, 3, 32, 32)  ->  logits (B, 10)

    VGG-16's 13 convolutions in blocks [64, 64], [128, 128], [256]*3, [512]*3, [512]*3, each
    preceded by Dropout(0.1) and followed by BatchNorm and ReLU, a 2x2 max-pool after each
    block, then Linear(512, 10). 14,728,266 parameters, as labml reports (85% on CIFAR-10).

    One deliberate difference: labml's BatchNorm uses ``track_running_stats=False``, i.e. batch
    statistics even in eval mode, so a test prediction depends on the rest of its batch.
    kdlib keeps running statistics by default; pass ``track_running_stats=False`` to copy
    labml exactly. Buffers are not parameters, so the count is the same either way.
    """
    blocks = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
    return _vgg(blocks, num_classes, dropout, track_running_stats)


def cifar_small_cnn(num_classes: int = 10, track_running_stats: bool = True) -> nn.Module:
    """The "small" student of labml's distillation experiment (``labml_nn/distillation/small.py``).

    x: (B, 3, 32, 32)  ->  logits (B, 10)

    Seven 3x3 convolutions in blocks [32, 32], [64, 64], [128], [128], [128], each followed by
    BatchNorm and ReLU (no dropout), a 2x2 max-pool after each block, then Linear(128, 10).
    437,034 parameters, as labml reports (80% alone, 82% distilled from the large model).
    BatchNorm: see ``cifar_large_cnn`` on ``track_running_stats``.
    """
    blocks = [[32, 32], [64, 64], [128], [128], [128]]
    return _vgg(blocks, num_classes, 0.0, track_running_stats)


# ------------------------------------------------------------ CIFAR ResNet-18
class BasicBlock(nn.Module):
    """ResNet's basic block: out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)).

    x: (B, in_ch, H, W)  ->  (B, out_ch, H / stride, W / stride)
    The shortcut is the identity, or a 1x1 strided conv + BN when the shape changes.
    Convs carry no bias: the BatchNorm after them has its own shift.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """A ResNet for 32x32 images: 3x3 stem, no max-pool, 4 stages, global average pool.

    x: (B, 3, 32, 32) -> stem (B, 64, 32, 32) -> stages (B, 512, 4, 4) -> pool (B, 512)
      -> logits (B, num_classes)
    The ImageNet stem (7x7 stride 2 + max-pool) would shrink 32x32 to 8x8 before the first
    stage; the 3x3 stride-1 stem keeps the resolution.
    """

    def __init__(self, blocks_per_stage: Sequence[int] = (2, 2, 2, 2), num_classes: int = 10):
        super().__init__()
        check_positive_int(num_classes, "num_classes")
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        stages: List[nn.Module] = []
        in_ch = 64
        for i, n in enumerate(blocks_per_stage):
            out_ch = 64 * 2 ** i
            stride = 1 if i == 0 else 2  # halve the resolution at each new stage
            blocks = [BasicBlock(in_ch, out_ch, stride)]
            blocks += [BasicBlock(out_ch, out_ch) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stages(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """CIFAR-style ResNet-18: 4 stages of 2 BasicBlocks, 64-128-256-512 channels.

    x: (B, 3, 32, 32)  ->  logits (B, num_classes)
    11,173,962 parameters for 10 classes (the common version, e.g. kuangliu/pytorch-cifar,
    and the teacher of haitongli/knowledge-distillation-pytorch).
    """
    return CifarResNet((2, 2, 2, 2), num_classes)


# -------------------------------------------------------------- Vision Transformer
def pre_norm_encoder(dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float) -> nn.TransformerEncoder:
    """depth pre-norm transformer layers of width dim (each sub-layer normalises its input, which keeps
    training stable): (B, N, dim) -> (B, N, dim). A ValueError names a setting out of range."""
    dim = check_positive_int(dim, "dim")
    check_positive_int(depth, "depth")
    heads = check_positive_int(heads, "heads")
    if dim % heads:
        raise ValueError(f"dim must be divisible by heads={heads} (each head gets dim/heads "
                         f"channels), got dim={dim}")
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, Real) or not (
            math.isfinite(mlp_ratio) and mlp_ratio > 0):
        raise ValueError(f"mlp_ratio must be a finite number > 0, got {mlp_ratio}")
    layer = nn.TransformerEncoderLayer(
        d_model=dim, nhead=heads, dim_feedforward=max(1, round(dim * mlp_ratio)),
        dropout=check_dropout(dropout, "dropout"), activation="gelu", batch_first=True, norm_first=True)
    # nested tensors only help with padding masks, and warn with norm_first=True
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


class VisionTransformer(nn.Module):
    """A small ViT (Dosovitskiy et al. 2021) for images that are not resized.

    x: (B, 3, H, W)
      -> patches by a p x p conv with stride p   (B, dim, H/p, W/p) -> (B, N, dim), N = HW/p^2
      -> prepend the class token, add positions  (B, N + 1, dim)
      -> depth pre-norm encoder layers           (B, N + 1, dim)
      -> LayerNorm of the class token, Linear    logits (B, num_classes)
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, num_classes: int = 10,
                 dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: float = 2.0,
                 dropout: float = 0.0, in_channels: int = 3):
        super().__init__()
        image_size = check_positive_int(image_size, "image_size")
        patch_size = check_positive_int(patch_size, "patch_size")
        if image_size % patch_size:
            raise ValueError(f"patch_size must divide image_size={image_size} "
                             f"(one of {[d for d in range(1, image_size + 1) if image_size % d == 0]}), "
                             f"got {patch_size}")
        check_positive_int(num_classes, "num_classes")
        num_patches = (image_size // patch_size) ** 2

        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        # small random starts, as in ViT/DeiT; zeros would give every position the same code
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.encoder = pre_norm_encoder(dim, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)      # (B, N, dim)
        cls = self.cls_token.expand(x.shape[0], -1, -1)         # (B, 1, dim)
        x = torch.cat([cls, x], dim=1) + self.pos_embed         # (B, N + 1, dim)
        x = self.encoder(x)
        return self.head(self.norm(x[:, 0]))                    # (B, num_classes)


def vit_tiny_cifar(num_classes: int = 10, patch_size: int = 4, dim: int = 192, depth: int = 6,
                   heads: int = 3, mlp_ratio: float = 2.0, dropout: float = 0.0) -> nn.Module:
    """A ViT for CIFAR-10 at its native 32x32: 64 patches of 4x4, 6 layers of width 192.

    x: (B, 3, 32, 32)  ->  logits (B, num_classes)
    1,806,538 parameters with the defaults. ``patch_size`` must divide 32 and ``dim`` must be
    divisible by ``heads``. The DeiT chapter distils a CNN into this model.
    """
    return VisionTransformer(32, patch_size, num_classes, dim, depth, heads, mlp_ratio, dropout)


class ByteTransformer(nn.Module):
    """A decoder-only transformer over bytes: a GPT (Radford et al., 2018) in miniature.

    x: (B, L) int64 bytes in [0, vocab), L <= context
      -> byte embedding + learned position embedding      (B, L, dim)
      -> depth pre-norm layers, causal self-attention      (B, L, dim): position t sees 0..t only
      -> LayerNorm, Linear                                 logits (B, L, vocab): the next byte's
    """

    def __init__(self, vocab: int = 256, context: int = 128, dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        vocab = check_positive_int(vocab, "vocab")
        self.context = check_positive_int(context, "context")
        self.embed = nn.Embedding(vocab, check_positive_int(dim, "dim"))
        self.pos_embed = nn.Parameter(torch.zeros(1, context, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = pre_norm_encoder(dim, depth, heads, mlp_ratio, dropout)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or not 1 <= x.shape[1] <= self.context:
            raise ValueError(f"x must have shape (B, L) with 1 <= L <= context={self.context}, "
                             f"got {tuple(x.shape)}")
        L = x.shape[1]
        h = self.embed(x) + self.pos_embed[:, :L]                              # (B, L, dim)
        causal = nn.Transformer.generate_square_subsequent_mask(L, device=x.device, dtype=h.dtype)
        h = self.blocks(h, mask=causal, is_causal=True)  # -inf above the diagonal: no peeking ahead
        return self.head(self.norm(h))                                         # (B, L, vocab)


def byte_transformer(dim: int = 128, depth: int = 4, heads: int = 4, context: int = 128,
                     vocab: int = 256) -> nn.Module:
    """A ByteTransformer: the language-model chapter's teacher with the defaults (4 layers of width
    128, 875,520 parameters); its student has width 64 (241,280 parameters, 28%).

    x: (B, L) bytes -> logits (B, L, vocab) for the next byte at each position.
    """
    return ByteTransformer(vocab, context, dim, depth, heads)


# ---------------------------------------------------------------------- helpers
def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in model (buffers such as BatchNorm's running mean excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def device_of(module: nn.Module) -> torch.device:
    """The device of module's first parameter or buffer; the CPU for a module that holds neither."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """module.eval() inside the block; afterwards each submodule gets its own mode back, even after an error.

    Not module.train(was_training): that would flatten the modes, and a batch norm deliberately left
    in eval mode inside a model in training mode would come back in training mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, mode in modes:
            m.training = mode


def probe(model: nn.Module, shape: Sequence[int], hooks: Dict[nn.Module, Callable],
          grad: bool = False) -> None:
    """One forward pass of a zero input (1, *shape) in eval mode, with hooks[m] as m's forward hook.

    For what can be read off a forward pass (shapes, FLOPs). A hook is called as
    hook(module, args, kwargs, output). The hooks are removed and every submodule's mode is
    restored afterwards; grad=True runs with gradients enabled.
    """
    p = next(model.parameters(), None)
    if p is None:
        raise ValueError("model must have parameters (their device and dtype make the probe's input)")
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m, hook in hooks.items()]
    try:
        with torch.set_grad_enabled(grad), eval_mode(model):
            model(torch.zeros(1, *shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()


def layer_table(model: nn.Module, shape: Sequence[int] = (3, 32, 32)) -> str:
    """A short table of the model's layers for one input of `shape`: what each computes, its output
    shape and its parameters, instead of the many-line module dump that print(model) gives.

    Rows are the layers the input passes through (leaf modules, and attention as one layer). A layer
    that keeps its input's shape right after the row above (an activation, dropout, normalisation)
    is folded into that row, its parameters included. Parameters that no layer holds (a ViT's class
    token and positions) get a row of their own, so the rows add up to the total. Lines fit 88 columns.
    """
    rows: List[Tuple[str, Tuple[int, ...], int]] = []
    short = {"BatchNorm1d": "BN", "BatchNorm2d": "BN", "Dropout": "drop"}

    def record(m: nn.Module, args, kwargs, out) -> None:
        out = out[0] if isinstance(out, tuple) else out
        x = args[0] if args else next(iter(kwargs.values()), None)
        shape_in = tuple(x.shape[1:]) if isinstance(x, Tensor) else None
        shape_out, params = tuple(out.shape[1:]), sum(p.numel() for p in m.parameters())
        elementwise = not isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))
        if rows and elementwise and shape_in == shape_out == rows[-1][1]:
            name, s, p = rows[-1]
            rows[-1] = (f"{name} + {short.get(type(m).__name__, type(m).__name__)}", s, p + params)
        else:
            rows.append((type(m).__name__ + _args(m), shape_out, params))

    units = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
    inside = {id(sub) for u in units for sub in u.modules() if sub is not u}
    leaves = [m for m in model.modules() if not list(m.children()) and id(m) not in inside
              and not isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict))]  # empty containers
    probe(model, shape, {m: record for m in leaves + units})
    total = count_params(model)
    if total > sum(n for _, _, n in rows):
        rows.append(("parameters outside these layers", (), total - sum(n for _, _, n in rows)))
    lines = [f"{'layer':50}{'output':>16}{'parameters':>14}"]
    lines += [f"{name[:50]:50}{' x '.join(map(str, s)):>16}{n:>14,}" for name, s, n in rows]
    lines.append(f"{'total':50}{'':>16}{total:>14,}")
    return "\n".join(lines)


def _args(m: nn.Module) -> str:
    if isinstance(m, nn.Conv2d):
        stride = f", stride {m.stride[0]}" if m.stride[0] != 1 else ""
        return f"({m.in_channels}->{m.out_channels}, {m.kernel_size[0]}x{m.kernel_size[1]}{stride})"
    if isinstance(m, nn.Linear):
        return f"({m.in_features}->{m.out_features})"
    return ""


MODELS: Dict[str, Callable[..., nn.Module]] = {
    "hinton_teacher": hinton_teacher,
    "hinton_student": hinton_student,
    "cifar_large_cnn": cifar_large_cnn,
    "cifar_small_cnn": cifar_small_cnn,
    "cifar_resnet18": cifar_resnet18,
    "vit_tiny_cifar": vit_tiny_cifar,
    "byte_transformer": byte_transformer,
}


def make_model(name: str, **kwargs) -> nn.Module:
    """Build a model from ``MODELS`` by name, passing kwargs to its constructor."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](**kwargs)
