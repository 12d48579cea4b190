"""Text for the language-model chapters: a corpus that every machine has, as bytes.

The corpus is the source of 26 modules of Python's own standard library (CORPUS_FILES), read from the
running interpreter's installation: every machine with Python has it, Colab's included, with no
download. Its bytes are the tokens (a vocabulary of 256, no tokenizer to fetch); the files are almost
all ASCII, so a byte is a character and bits per byte are bits per character.

Python versions ship different versions of these files, so what was read is pinned and printed
(Corpus.describe): the interpreter's version, the files, their bytes and a SHA-256 of the whole.

    corp = corpus()                                    # bytes, split 90 / 10 inside every file
    data = text_data(corp, context=64, n_train=2000)   # Data: x (N, 64) bytes, y (N, 64) the next ones
    sample(model, "def ", 100, T=0.8)                  # text, one byte at a time
"""
from __future__ import annotations

import hashlib
import math
import platform
import sysconfig
import textwrap
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import Data
from .decoding import generate, written_windows
from .models import check_positive_int, device_of, eval_mode
from .train import evaluate

__all__ = ["CORPUS_FILES", "Corpus", "corpus", "to_sequences", "text_data", "encode", "decode", "samples",
           "sample", "rewrite", "Judged", "judged_bits", "byte_names", "bits_per_character",
           "next_byte_entropy", "distinct_ngrams"]

# modules that every CPython since 3.8 ships as one file, about 1.5 MB together
CORPUS_FILES = (
    "argparse.py", "ast.py", "bisect.py", "calendar.py", "configparser.py", "csv.py", "dataclasses.py",
    "difflib.py", "enum.py", "fractions.py", "functools.py", "heapq.py", "inspect.py", "ipaddress.py",
    "logging/__init__.py", "pickle.py", "pprint.py", "random.py", "shutil.py", "statistics.py",
    "string.py", "subprocess.py", "tarfile.py", "textwrap.py", "threading.py", "typing.py",
)
VOCAB = 256  # one token per byte value


@dataclass(frozen=True)
class Corpus:
    """The corpus's bytes, split into training and validation text, and what they were read from."""

    train: bytes
    valid: bytes
    files: Tuple[str, ...]
    python: str     # the interpreter whose standard library was read, e.g. "3.11.7"
    sha256: str     # of every file's bytes, in order

    def describe(self, width: int = 88) -> str:
        """What was read, in a few lines for a chapter's output."""
        names = ", ".join(Path(f).stem if Path(f).stem != "__init__" else Path(f).parent.name
                          for f in self.files)
        total = len(self.train) + len(self.valid)
        return "\n".join([
            f"corpus: Python {self.python}'s standard library, {len(self.files)} modules, {total:,} bytes",
            f"  sha256 {self.sha256[:32]}",
            f"  train {len(self.train):,} bytes / validation {len(self.valid):,} "
            f"(the last {len(self.valid) / total:.0%} of each file)",
            textwrap.fill(f"modules: {names}", width, initial_indent="  ", subsequent_indent="    ")])


def corpus(files: Sequence[str] = CORPUS_FILES, valid_share: float = 0.1,
           root: Optional[Union[str, Path]] = None) -> Corpus:
    """Read files (paths under root, by default this interpreter's standard library) in order; the
    last valid_share of each file goes to validation, the rest to training, so that every module is
    in both and no validation byte is a training byte. A missing file is a FileNotFoundError that
    names it."""
    if isinstance(valid_share, bool) or not isinstance(valid_share, (int, float)) or not 0 < valid_share < 1:
        raise ValueError(f"valid_share must be a number in (0, 1), got {valid_share!r}")
    if not files:
        raise ValueError("files must name at least one file")
    root = Path(sysconfig.get_paths()["stdlib"] if root is None else root)
    train, valid, digest = [], [], hashlib.sha256()
    for name in files:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"the corpus file {name} is not in {root}: this Python installation "
                                    f"ships its standard library without it; pass files= or root=")
        raw = path.read_bytes()
        digest.update(raw)
        cut = len(raw) - max(1, round(valid_share * len(raw)))
        train.append(raw[:cut])
        valid.append(raw[cut:])
    return Corpus(b"".join(train), b"".join(valid), tuple(files), platform.python_version(), digest.hexdigest())


def to_sequences(text: bytes, context: int, n: Optional[int] = None, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """text cut into windows of context + 1 bytes that do not overlap: x = window[:-1], y = window[1:],
    each (N, context) int64, y[i, t] the byte after x[i, t]. n: keep n of the windows, drawn at
    random with seed (None: all, in order)."""
    context = check_positive_int(context, "context")
    tokens = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    N = (len(tokens) - 1) // context
    if N < 1:
        raise ValueError(f"text must hold more than context={context} bytes, got {len(tokens)}")
    # window i covers bytes i*context .. (i+1)*context: its last byte is the next window's first
    starts = torch.arange(N) * context
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= N:
            raise ValueError(f"n must be an integer in [1, {N}] (the windows of {context + 1} bytes the "
                             f"text holds), got {n!r}")
        starts = starts[torch.randperm(N, generator=torch.Generator().manual_seed(seed))[:n]]
    idx = starts[:, None] + torch.arange(context + 1)  # (N, context + 1)
    windows = tokens[idx]
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def text_data(corp: Corpus, context: int, n_train: Optional[int] = None, n_valid: Optional[int] = None,
              seed: int = 0, device: Optional[torch.device] = None) -> Data:
    """The corpus as a kdlib Data for fit: x (N, context) bytes, y (N, context) the byte after each;
    n_train / n_valid windows drawn at random with seed (None: all). The validation windows are
    Data's test set: bits_per_character scores a model on them."""
    x, y = to_sequences(corp.train, context, n_train, seed)
    xv, yv = to_sequences(corp.valid, context, n_valid, seed)
    device = torch.device("cpu") if device is None else device
    source = (f"Python {corp.python} standard library ({len(corp.files)} modules, sha256 "
              f"{corp.sha256[:16]}); windows of {context} bytes, {len(y):,} of "
              f"{(len(corp.train) - 1) // context:,} for training (seed {seed})")
    return Data("python-stdlib", x.to(device), y.to(device), xv.to(device), yv.to(device),
                classes=[repr(bytes([b])) for b in range(VOCAB)], source=source)


def encode(text: Union[str, bytes]) -> Tensor:
    """text as its UTF-8 bytes: (L,) int64."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long() if raw else torch.zeros(0, dtype=torch.long)


def decode(tokens: Tensor) -> str:
    """Bytes (L,) back to text; a byte sequence that is not UTF-8 shows the replacement character."""
    return bytes(tokens.to(torch.uint8).tolist()).decode("utf-8", errors="replace")


def samples(model: nn.Module, prompt: Union[str, bytes], n: int, T: float = 1.0, count: int = 1,
            generator: Optional[torch.Generator] = None) -> List[str]:
    """count texts, each the prompt followed by n bytes drawn from the model one at a time
    (kdlib.decoding.generate): each byte from softmax(z / T) of the logits z after the text so far;
    T < 1 sharpens towards the most likely byte, T > 1 flattens. generator: a torch.Generator on
    the model's device, for samples that repeat.
    """
    count = check_positive_int(count, "count")
    tokens = encode(prompt)
    if len(tokens) == 0:
        raise ValueError("prompt must hold at least one byte to continue from")
    return [decode(t) for t in generate(model, tokens.expand(count, -1), n, T, generator).cpu()]


def sample(model: nn.Module, prompt: Union[str, bytes], n: int, T: float = 1.0,
           generator: Optional[torch.Generator] = None) -> str:
    """The prompt followed by n bytes drawn from the model, as text: samples(...) with count=1."""
    return samples(model, prompt, n, T, 1, generator)[0]


def rewrite(writer: nn.Module, data: Data, prompt: int, T: float = 1.0, seed: int = 0) -> Data:
    """data with every training window rewritten by writer after its first `prompt` bytes
    (written_windows): the training text of sequence-level distillation (Kim & Rush, 2016), where the
    teacher writes what the student reads. The test (validation) windows stay the corpus's own."""
    gen = torch.Generator(device_of(writer)).manual_seed(seed)
    x, y = written_windows(writer, data.x_train, data.y_train, prompt, T, gen)
    return replace(data, x_train=x, y_train=y,
                   source=f"{data.source}; bytes {prompt}.. of each window written by a model at T={T} "
                          f"(seed {seed})")


class Judged(NamedTuple):
    bits: float         # the judge's mean cross entropy on the written bytes, bits per byte
    texts: List[str]    # what the writer wrote, one text per window (its prompt left out)


@torch.no_grad()
def judged_bits(judge: nn.Module, writer: nn.Module, data: Data, prompt: int, T: float = 1.0,
                n: Optional[int] = None, seed: int = 0) -> Judged:
    """How likely the judge finds what the writer writes: the writer continues the first `prompt`
    bytes of data's first n validation windows (all: None) to the window's end, and the judge's
    cross entropy on the written bytes, -mean log2 p_judge(byte | text before it), is the score.

    With a teacher as judge, it scores a student's own text the way on-policy distillation trains
    it (and a judge's score of its own writing at T = 1 is about its entropy per byte). A low score
    alone can be bought by repeating a likely phrase: read it beside distinct_ngrams(texts).
    """
    x, y = data.x_test[:n], data.y_test[:n]
    gen = torch.Generator(device_of(writer)).manual_seed(seed)
    xs, ys = written_windows(writer, x, y, prompt, T, gen)
    total, count = 0.0, 0
    with eval_mode(judge):
        for i in range(0, len(xs), 256):
            logits = judge(xs[i: i + 256].to(device_of(judge))).double()[:, prompt - 1:]  # written bytes
            target = ys[i: i + 256, prompt - 1:].to(logits.device)
            total += F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="sum").item()
            count += target.numel()
    return Judged(total / count / math.log(2), [decode(row[prompt - 1:]) for row in ys.cpu()])


def byte_names() -> List[str]:
    """A label for each of the 256 bytes: a printable character as itself, a space as "␣", others
    as escapes ("\\n", "\\x00")."""
    names = []
    for b in range(VOCAB):
        c = chr(b)
        names.append("␣" if c == " " else c if 32 < b < 127 else repr(c)[1:-1] if b < 128 else f"\\x{b:02x}")
    return names


@torch.no_grad()
def next_byte_entropy(model: nn.Module, data: Data, batch_size: int = 256) -> float:
    """The mean entropy, in bits, of the model's next-byte distribution softmax(z) over data's test
    positions: how spread its predictions are (0: always certain; 8: uniform over 256 bytes)."""
    device = device_of(model)
    total, count = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(data.x_test), batch_size):
            log_q = torch.log_softmax(model(data.x_test[i: i + batch_size].to(device)).double(), -1)
            total += -(log_q.exp() * log_q).sum().item()
            count += log_q.shape[0] * log_q.shape[1]
    return total / count / math.log(2)


def distinct_ngrams(texts: Sequence[str], n: int = 4) -> float:
    """The share of distinct n-grams (of characters) among all the n-grams of texts: 1 when no n-gram
    repeats, near 0 for texts that repeat themselves. A measure of a sampler's diversity."""
    n = check_positive_int(n, "n")
    grams = [t[i: i + n] for t in texts for i in range(len(t) - n + 1)]
    if not grams:
        raise ValueError(f"texts must hold at least one run of {n} characters")
    return len(set(grams)) / len(grams)


def bits_per_character(model: nn.Module, data: Data) -> float:
    """The model's mean cross entropy on data's test (validation) windows, in bits per byte:
    nats / ln 2; a byte is a character in this corpus. A model that guessed uniformly scores 8."""
    return evaluate(model, data.x_test, data.y_test).loss / math.log(2)
