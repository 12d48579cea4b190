"""Content keys for kdlib's caches: the same content gives the same key, any change gives another.

    fingerprint(obj)         a short hash of tensors, numbers, strings, numpy values, functions,
                             classes and containers of them; TypeError on anything else
    module_content(module)   what decides a module's output, its code included, ready for fingerprint

Nothing that differs between two runs of the same code goes in (no id(), no address, no set order),
so a key made today finds the checkpoint made yesterday by another process.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from typing import Any, Dict, List

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["fingerprint", "module_content"]


def fingerprint(obj: Any) -> str:
    """A short hash of obj's content: a cache key. Each item is framed by its kind and size, so no
    two different objects feed the same bytes. What goes in:

    tensors        every byte (bfloat16 too), with dtype and shape
    numpy          arrays and scalars: every byte, with dtype and shape (np.float32(5) is not 5.0)
    numbers        by value, 4 and 4.0 alike (T=4 and T=4.0 are the same run); bool is not int
    str, bytes, None; dicts (any key order), lists and tuples (torch.Size too), sets (sorted)
    enums          class and value;  dataclasses: class and fields
    torch          dtype, device, layout, memory_format by name
    functions      module.qualname, and unless torch's own, their code (bytecode, constants and
                   names, not line numbers: a new Python is a new key), defaults, closure and the
                   functions and classes of their own module that they name
    classes        module.qualname, and for each class in the MRO outside torch and the standard
                   library, its methods' code (properties too) and its public class attributes
    partials       the function, its arguments;  methods: the function, and the object it is bound
                   to (by class for a module, a class or a Python module)

    Anything else raises TypeError, rather than hash a str() that could hide content or hold an
    address. SHA-1; a tensor over 16 MB is hashed in 16 MB pieces on up to 8 threads (each copies
    its piece off the GPU, if any), then their digests: 60,000 Fashion-MNIST images (60,000 x 784
    float32, 188 MB) take 0.10 s on a 2-core CPU (0.14 s on one thread).
    """
    h = hashlib.sha1()
    _Feeder(h).feed(obj)
    return h.hexdigest()[:16]


_PIECE = 1 << 24  # bytes


def _sha1(piece: Tensor) -> bytes:
    return hashlib.sha1(piece.cpu().numpy()).digest()


def _torch_own(obj: Any) -> bool:
    """Defined in torch itself (torchvision is not: its models' code goes in the key)."""
    module = getattr(obj, "__module__", None) or ""
    return module == "torch" or module.startswith("torch.")


def _name(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', getattr(obj, '__name__', '?'))}"


_TORCH_NAMED = (torch.dtype, torch.device, torch.layout, torch.memory_format)


class _Feeder:
    """One fingerprint's walk: feeds obj's framed bytes to h; a function or class met again feeds
    only its name (recursion, and each class's code once per key)."""

    def __init__(self, h: "hashlib._Hash"):
        self.h, self.seen = h, set()

    def put(self, head: str, data: bytes = b"") -> None:
        self.h.update(f"{head} {len(data)}\n".encode() + data)

    def feed(self, o: Any) -> None:
        put = self.put
        if o is None or o is Ellipsis:
            put(repr(o))
        elif isinstance(o, bool):
            put(f"bool {o}")
        elif isinstance(o, Tensor):
            self.tensor(o)
        elif isinstance(o, (np.ndarray, np.generic)):
            a = np.asarray(o)
            if a.dtype.hasobject:
                raise TypeError(f"fingerprint cannot hash a numpy array of Python objects (dtype {a.dtype})")
            put(f"ndarray {a.dtype.str} {a.shape}", np.ascontiguousarray(a).tobytes())
        elif isinstance(o, enum.Enum):
            put(f"enum {_name(type(o))}")
            self.feed(o.value)
        elif isinstance(o, Real):  # T=4 and T=4.0 are the same run
            o = int(o) if isinstance(o, Integral) or float(o).is_integer() else float(o)
            put(f"number {o!r}")
        elif isinstance(o, complex):
            put(f"complex {o!r}")
        elif isinstance(o, str):
            put("str", o.encode("utf-8", "surrogatepass"))
        elif isinstance(o, bytes):
            put("bytes", o)
        elif isinstance(o, dict):
            put(f"dict {len(o)}")
            keys = sorted(o) if all(type(k) is str for k in o) else sorted(o, key=_digest)
            for k in keys:
                self.feed(k)
                self.feed(o[k])
        elif isinstance(o, (list, tuple)):
            put(f"list {len(o)}")
            for v in o:
                self.feed(v)
        elif isinstance(o, (set, frozenset)):
            put(f"set {len(o)}")
            for d in sorted(_digest(v) for v in o):
                put("item", d)
        elif isinstance(o, _TORCH_NAMED):
            put(f"{type(o).__name__} {o}")
        elif dataclasses.is_dataclass(o) and not isinstance(o, type):
            put(f"dataclass {_name(type(o))}")
            self.feed({f.name: getattr(o, f.name) for f in dataclasses.fields(o)})
        elif isinstance(o, slice):
            put("slice")
            self.feed((o.start, o.stop, o.step))
        elif isinstance(o, type):
            self.klass(o)
        elif isinstance(o, types.FunctionType):
            self.function(o)
        elif isinstance(o, types.CodeType):
            self.code(o)
        elif isinstance(o, functools.partial):
            put("partial")
            self.feed([o.func, o.args, o.keywords])
        elif isinstance(o, (types.MethodType, types.BuiltinFunctionType, types.BuiltinMethodType,
                            types.MethodWrapperType, types.WrapperDescriptorType, types.MethodDescriptorType,
                            types.ClassMethodDescriptorType)):
            put(f"method {_name(o)}")
            owner = getattr(o, "__self__", None)
            if isinstance(o, types.MethodType):
                self.feed(o.__func__)
            # a method of a module (its content is in module_content), of a class or of a Python
            # module (F.gelu is torch._C._nn's) is named by the owner's class; any other owner's state counts
            if owner is None or isinstance(owner, (nn.Module, type, types.ModuleType)):
                put(f"owner {_name(owner if isinstance(owner, type) else type(owner))}")
            else:
                self.feed(owner)
        else:
            raise TypeError(f"fingerprint cannot hash a {_name(type(o))} faithfully")

    def tensor(self, o: Tensor) -> None:
        self.h.update(f"tensor {o.dtype} {tuple(o.shape)}\n".encode())
        flat = o.detach().resolve_conj().resolve_neg().contiguous().reshape(-1).view(torch.uint8)
        if len(flat) <= _PIECE:
            self.h.update(flat.cpu().numpy())  # every byte, whatever the dtype
        else:  # hashlib lets go of the GIL: the pieces are copied and hashed side by side
            with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
                for digest in pool.map(_sha1, flat.split(_PIECE)):
                    self.h.update(digest)

    def first_time(self, o: Any) -> bool:
        """True the first time o is met in this walk: a class or function met again is only named."""
        if id(o) in self.seen:  # o is alive during the walk: its id is not reused
            return False
        self.seen.add(id(o))
        return True

    def klass(self, cls: type) -> None:
        """A class: its name and, unless torch's own, the body of each class in its MRO outside
        torch and Python's standard library (a changed forward, or base class, is another key)."""
        self.put(f"class {_name(cls)}")
        if not _torch_own(cls) and self.first_time(cls):
            for c in cls.__mro__:
                if not _torch_own(c) and c.__module__.partition(".")[0] not in sys.stdlib_module_names:
                    self.class_body(c)

    def function(self, f: types.FunctionType) -> None:
        """A function: its name and, unless torch's own, its code, defaults, closure and the
        functions and classes of its own module that it names (a helper in the same notebook)."""
        self.put(f"function {_name(f)}")
        if _torch_own(f) or not self.first_time(f):
            return
        self.feed([f.__code__, f.__defaults__, f.__kwdefaults__])
        for cell in f.__closure__ or ():
            try:
                self.feed(cell.cell_contents)
            except ValueError:  # an empty cell
                self.put("empty cell")
        for name in sorted(_names(f.__code__)):
            g = f.__globals__.get(name)
            if isinstance(g, (type, types.FunctionType)) and getattr(g, "__module__", None) == f.__module__:
                self.put("global", name.encode())
                self.feed(g)

    def code(self, c: types.CodeType) -> None:
        """A code object: its bytecode, constants (nested code too), names and argument counts; not its
        file name or line numbers (an edit above it is not a change)."""
        self.put(f"code {c.co_name} {c.co_argcount} {c.co_posonlyargcount} {c.co_kwonlyargcount} {c.co_flags}",
                 c.co_code)
        self.feed([c.co_consts, c.co_names, c.co_varnames, c.co_freevars, c.co_cellvars])

    def class_body(self, cls: type) -> None:
        """cls's own methods (their code) and class attributes; not its docstring, annotations or
        private class data (ABC's and Enum's bookkeeping)."""
        self.put(f"body {_name(cls)}")
        for name, v in sorted(vars(cls).items()):
            if isinstance(v, (staticmethod, classmethod)):
                v = v.__func__
            if isinstance(v, (property, types.DynamicClassAttribute)):
                v = [v.fget, v.fset, v.fdel]
            elif isinstance(v, functools.cached_property):
                v = v.func
            elif not isinstance(v, types.FunctionType) and name.startswith("_"):
                continue
            self.put("attr", name.encode())
            try:
                self.feed(v)
            except TypeError as e:
                raise TypeError(f"class {_name(cls)}, attribute {name!r}: {e}") from None


def _names(code: types.CodeType) -> set:
    """The global names that code and the code nested in it use."""
    names = set(code.co_names)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            names |= _names(c)
    return names


def _digest(o: Any) -> bytes:
    h = hashlib.sha1()
    _Feeder(h).feed(o)
    return h.digest()


# nn.Module's own bookkeeping (parameters, buffers, submodules, hooks, the training flag): parameters
# and buffers go in by name below; hooks are not settings
_MODULE_OWN = frozenset(vars(nn.Module()))


def module_content(module: nn.Module) -> Dict[str, List[Any]]:
    """What decides a module's output, per submodule (by name): for fingerprint.

    Each submodule's [class name, fingerprint of the class (its code: the methods of every class in
    its MRO that is not torch's own, so a changed forward is another key; torchvision's and kdlib's
    models are not torch's own), its settings, its own parameters, its own buffers (persistent or
    not: a state_dict leaves out the others)]. Settings: every attribute but nn.Module's bookkeeping
    (parameters, buffers, submodules, hooks, the training flag), each as its fingerprint; for torch's
    own classes only the public ones (their private ones are derived from those or are internals).
    Not in the key: hooks, global variables the code reads, and the code of torch itself.
    An attribute that fingerprint cannot hash raises TypeError naming the submodule and attribute.
    """
    content, classes = {}, {}
    for name, m in module.named_modules():
        cls = type(m)
        where = f"submodule {name!r} ({cls.__qualname__})" if name else f"the model ({cls.__qualname__})"
        if cls not in classes:
            classes[cls] = _key_of(cls, where, "its class")
        own = _torch_own(cls)
        settings = {k: _key_of(v, where, f"attribute {k!r}") for k, v in vars(m).items()
                    if k not in _MODULE_OWN and not (own and k.startswith("_"))}
        content[name] = [_name(cls), classes[cls], settings,
                         dict(m.named_parameters(recurse=False)), dict(m.named_buffers(recurse=False))]
    return content


def _key_of(v: Any, where: str, what: str) -> str:
    try:
        return fingerprint(v)
    except TypeError as e:
        raise TypeError(
            f"the cache key of {where} cannot hold {what}, a {_name(type(v))}: {e}. kdlib hashes every "
            f"setting that can change a model's output; keep settings as numbers, strings, tensors, numpy "
            f"values, enums, dataclasses, functions or containers of them, and layers as submodules "
            f"(or train without the cache: train_or_load(..., cache=False))") from None
