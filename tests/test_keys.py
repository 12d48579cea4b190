"""Cache keys cover every setting of a model and its code: a change is another key, the same model the same key."""
from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

import kdlib as kd
from kdlib.keys import fingerprint, module_content
from toys import blobs as toy_blobs

blobs = functools.partial(toy_blobs, n_train=48, n_test=24)  # this file's default size

# a model as a notebook defines it: in __main__, where inspect finds no source
NET = """
import torch
from torch import nn

def act(x, kind):
    return torch.relu(x) if kind == "relu" else torch.sigmoid(x)

class Net(nn.Module):
    def __init__(self, opts=None):
        super().__init__()
        self.opts = dict(opts or {"act": "relu"})
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(act(self.fc1(x), self.opts["act"]))
"""


def notebook(source: str = NET, name: str = "Net", **replace: str) -> type:
    """The class `name` of source, each key of replace replaced by its value, defined as a notebook cell would."""
    for old, new in replace.items():
        assert old in source
        source = source.replace(old, new)
    ns = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cell>", "exec", dont_inherit=True), ns)
    return ns[name]


def key(model: nn.Module) -> str:
    return fingerprint(module_content(model))


def built(make, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return make()


class Holder(nn.Module):
    """A layer whose only content is one setting."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x):
        return x


def holder_key(value) -> str:
    return key(built(lambda: nn.Sequential(nn.Linear(2, 2), Holder(value))))


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


@dataclasses.dataclass
class Opts:
    act: str = "relu"
    scale: float = 1.0


def my_act(x):
    return x * torch.sigmoid(x)


def my_other_act(x):
    return x * torch.tanh(x)


# ------------------------------------------------------------------ settings
def test_a_changed_dict_setting_gives_another_key():
    Net = notebook()
    assert key(built(lambda: Net({"act": "relu"}))) != key(built(lambda: Net({"act": "sigmoid"})))


def test_a_numpy_scalar_setting_is_in_the_key():
    assert holder_key(np.float32(5.0)) != holder_key(np.float32(6.0))
    assert fingerprint(np.float32(5.0)) != fingerprint(5.0) != fingerprint(np.float64(5.0))  # its dtype counts


def test_a_numpy_array_is_hashed_by_its_bytes_not_its_abbreviated_str():
    a = np.arange(5000, dtype=np.float32)
    b = a.copy()
    b[2500] = -1  # str(a) and str(b) are both '[0.000e+00 1.000e+00 ... 4.999e+03]'
    assert str(a) == str(b) and fingerprint(a) != fingerprint(b)
    assert fingerprint(a) != fingerprint(a.astype(np.float64)) != fingerprint(a.reshape(50, 100))
    assert holder_key(a) != holder_key(b)


@pytest.mark.parametrize("a, b", [
    (Colour.RED, Colour.BLUE),
    (Opts(), Opts(scale=2.0)),
    ({"a", "b"}, {"a", "c"}),
    (torch.float32, torch.float64),
    (torch.device("cpu"), torch.device("meta")),
    (torch.Size([2, 3]), torch.Size([3, 2])),
    ([{"act": "relu"}], [{"act": "gelu"}]),
    (F.relu, F.gelu),
    (my_act, my_other_act),
    (functools.partial(F.leaky_relu, negative_slope=0.1), functools.partial(F.leaky_relu, negative_slope=0.2)),
    (nn.BatchNorm2d, nn.LayerNorm),
], ids=["enum", "dataclass", "set", "dtype", "device", "size", "nested", "torch-function", "function",
        "partial", "class"])
def test_every_kind_of_setting_is_in_the_key(a, b):
    assert holder_key(a) != holder_key(b)
    assert holder_key(a) == holder_key(a)


def test_a_changed_user_function_setting_gives_another_key():
    src = "def act(x):\n    return x * torch.sigmoid(x)\n"
    changed = src.replace("sigmoid", "tanh")

    def make(code):
        ns = {"__name__": "__main__", "torch": torch}
        exec(code, ns)
        return ns["act"]
    assert holder_key(make(src)) == holder_key(make(src)) != holder_key(make(changed))


def test_a_private_setting_of_the_models_own_class_is_in_the_key():
    Net = notebook(**{'self.opts = dict(opts or {"act": "relu"})':
                      'self.opts = dict(opts or {"act": "relu"})\n        self._scale = opts["scale"]'})
    assert key(built(lambda: Net({"act": "relu", "scale": 1}))) != key(built(lambda: Net({"act": "relu", "scale": 2})))


def test_hooks_and_torchs_private_bookkeeping_stay_out_of_the_key():
    model = built(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.LSTM(4, 4)))
    before = key(model)
    model.register_forward_hook(lambda m, i, o: None)
    model[0].register_forward_pre_hook(lambda m, i: None)
    assert key(model) == before


def test_a_type_the_key_cannot_hash_raises_naming_the_attribute():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()

    with pytest.raises(TypeError, match=r"submodule '1' \(.*Odd\).*attribute 'lock'.*lock.*keep settings as"):
        module_content(nn.Sequential(nn.Linear(2, 2), Odd()))


def test_fingerprint_raises_on_what_it_cannot_hash_faithfully():
    class Thing:
        pass
    for o in (Thing(), object(), np.array([Thing()], dtype=object)):
        with pytest.raises(TypeError, match="fingerprint cannot hash"):
            fingerprint(o)


def test_4_and_4_0_are_the_same_number_and_a_bool_is_not_an_int():
    assert fingerprint(4) == fingerprint(4.0) and fingerprint({"T": 4}) == fingerprint({"T": 4.0})
    assert fingerprint(1) != fingerprint(True) and fingerprint(0) != fingerprint(False)
    assert fingerprint(1) != fingerprint("1") and fingerprint({1: 2}) != fingerprint({"1": 2})


# ------------------------------------------------------------------ code
def test_a_notebook_class_has_no_source_for_inspect():
    with pytest.raises((OSError, TypeError)):
        inspect.getsource(notebook())  # so the key hashes its code objects


def test_a_changed_forward_with_the_same_weights_gives_another_key():
    Old, New = notebook(), notebook(**{'self.opts["act"]))': 'self.opts["act"]) * 2)'})
    old, new = built(Old), built(New)
    assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
    assert key(old) == key(built(Old)) == key(built(notebook())) != key(new)


def test_a_changed_helper_that_forward_calls_gives_another_key():
    New = notebook(**{"return torch.relu(x) if": "return torch.relu(x) - 0.5 if"})
    assert key(built(notebook())) != key(built(New))


def test_a_changed_constructor_class_attribute_or_base_class_gives_another_key():
    source = NET + "\nclass Wide(Net):\n    width = 1\n"
    wide = key(built(notebook(source, "Wide")))
    assert wide == key(built(notebook(source, "Wide")))
    assert wide != key(built(notebook(source, "Wide", **{"width = 1": "width = 2"})))
    assert wide != key(built(notebook(source, "Wide", **{"torch.sigmoid(x)": "torch.tanh(x)"})))  # the base's helper
    assert wide != key(built(notebook(source, "Wide", **{'{"act": "relu"})': '{"act": "relu"}, **{})'})))


def test_a_model_with_standard_library_bases_and_an_enum_in_its_code_gets_a_key():
    source = textwrap.dedent("""
        import abc, enum
        from torch import nn

        class Mode(enum.Enum):
            FAST = 1

        class Base(nn.Module, abc.ABC):
            @abc.abstractmethod
            def forward(self, x): ...

        class Net(Base):
            mode = Mode.FAST

            @property
            def doubled(self):
                return Mode.FAST.value * 2

            def forward(self, x):
                return x * self.doubled
    """)
    net = notebook(source)
    assert key(net()) == key(notebook(source)()) != key(notebook(source, **{"* 2": "* 3"})())


# ------------------------------------------------------------------ every model of the book
BOOK_MODELS = [*(functools.partial(make) for make in kd.models.MODELS.values()),
               lambda: torchvision.models.resnet18(num_classes=10),
               lambda: nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, activation=F.gelu, batch_first=True),
               lambda: nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, activation="relu"),
               lambda: nn.MultiheadAttention(16, 2),
               lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.1), nn.ReLU(),
                                     nn.MaxPool2d(2), nn.Flatten(), nn.LayerNorm(4), nn.GELU(), nn.Identity(),
                                     nn.BatchNorm1d(4), nn.Embedding(5, 4), nn.LSTM(4, 4))]


@pytest.mark.parametrize("make", BOOK_MODELS, ids=[*kd.models.MODELS, "torchvision-resnet18", "encoder-layer-gelu",
                                                   "encoder-layer-relu", "attention", "layers"])
def test_every_model_of_the_book_gets_the_same_key_when_built_twice(make):
    assert key(built(make)) == key(built(make)) != key(built(make, seed=1))


def test_torchvisions_code_is_in_the_key_and_torchs_is_not(monkeypatch):
    """torchvision's models are not torch's own: a changed BasicBlock.forward is another key. torch's own
    layers are keyed by name and settings (a torch upgrade that changes nn.Linear is not seen)."""
    make = lambda: torchvision.models.resnet18(num_classes=10)  # noqa: E731
    before = key(built(make))
    monkeypatch.setattr(nn.Linear, "forward", lambda self, x: F.linear(x, self.weight, self.bias) * 2)
    assert key(built(make)) == before
    block = torchvision.models.resnet.BasicBlock
    forward = block.forward
    monkeypatch.setattr(block, "forward", lambda self, x: forward(self, x) * 2)
    assert key(built(make)) != before


def test_the_key_is_the_same_in_another_process():
    """No id(), address or set order in the key: a checkpoint made yesterday is found today."""
    code = textwrap.dedent(f"""
        import torch, kdlib as kd
        from kdlib.keys import fingerprint, module_content
        ns = {{"__name__": "__main__"}}
        exec({NET!r}, ns)
        torch.manual_seed(0)
        net = ns["Net"]({{"act": "relu", "names": {{str(i) for i in range(20)}}}})
        print(fingerprint([module_content(net), {{str(i) for i in range(20)}}]))
    """)
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": os.pathsep.join(sys.path)}
    there = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    ns = {"__name__": "__main__"}
    exec(compile(NET, "<cell>", "exec", dont_inherit=True), ns)  # not under this file's __future__ import
    torch.manual_seed(0)
    here = fingerprint([module_content(ns["Net"]({"act": "relu", "names": {str(i) for i in range(20)}})),
                        {str(i) for i in range(20)}])
    assert there.stdout.strip() == here


# ------------------------------------------------------------------ end to end: the caches
def test_train_or_load_trains_again_after_a_changed_setting_or_forward(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    data, cfg = blobs(), kd.FitConfig(epochs=1, batch_size=16)
    Net, Doubled = notebook(), notebook(**{'self.opts["act"]))': 'self.opts["act"]) * 2)'})

    def run(make):
        return kd.train_or_load(make, data, cfg, name="net", progress=False, verbose=False)[1].from_cache

    assert not run(Net)
    assert run(notebook())  # the same cell run again: the same key
    assert not run(lambda: Net({"act": "sigmoid"}))
    assert not run(Doubled)
    assert run(lambda: Net({"act": "sigmoid"}))


def test_teacher_logits_follow_a_changed_setting_and_a_changed_forward():
    x = torch.randn(12, 8)
    teacher = built(notebook())
    before = kd.teacher_logits(teacher, x)
    teacher.opts["act"] = "sigmoid"
    torch.testing.assert_close(kd.teacher_logits(teacher, x), kd.frozen_forward(teacher, x))
    assert not torch.allclose(kd.teacher_logits(teacher, x), before)
    sigmoid = kd.teacher_logits(teacher, x)
    teacher.__class__ = notebook(**{'self.opts["act"]))': 'self.opts["act"]) * 2)'})  # the same object, new code
    torch.testing.assert_close(kd.teacher_logits(teacher, x), kd.frozen_forward(teacher, x))
    assert not torch.allclose(kd.teacher_logits(teacher, x), sigmoid)


def test_logit_table_follows_a_changed_setting_and_a_changed_forward(tmp_path, monkeypatch):
    monkeypatch.setenv("KDLIB_CACHE", str(tmp_path))
    x, y = torch.randn(12, 8), torch.randint(0, 3, (12,))
    dataset = kd.Indexed(TensorDataset(x, y))
    old = built(notebook())
    kd.logit_table(old, dataset)
    for new in (built(lambda: notebook()({"act": "sigmoid"})),
                built(notebook(**{'self.opts["act"]))': 'self.opts["act"]) * 2)'}))):
        assert all(torch.equal(a, b) for a, b in zip(old.state_dict().values(), new.state_dict().values()))
        torch.testing.assert_close(kd.logit_table(new, dataset), kd.frozen_forward(new, x))
