"""Timing and peak memory: one timer, interleaved rounds, the peak of one step."""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import threading
import time
from typing import Callable, Iterator

import torch

Step = Callable[[], object]


class Timer:
    """Seconds taken by ``iters`` calls of ``step``: CUDA events on CUDA, else the wall clock."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, step: Step, iters: int) -> float:
        if self.device.type == 'cuda':
            start, end = (torch.cuda.Event(enable_timing=True) for _ in range(2))
            start.record()
            for _ in range(iters):
                step()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        begin = time.perf_counter()
        for _ in range(iters):
            step()
        return time.perf_counter() - begin


def iterations(timer: Timer, step: Step, seconds: float) -> int:
    """How many calls of ``step`` take about ``seconds`` (from one timed call; at least 1)."""
    return max(1, round(seconds / timer(step, 1)))


def interleaved_rounds(steps: dict[str, Step], iters: dict[str, int], rounds: int,
                       timer: Timer) -> Iterator[dict[str, float]]:
    """Seconds per call of each step, one dict per round; each round runs every step
    ``iters[name]`` times, and the order of the steps rotates by one from round to round."""
    names = list(steps)
    for r in range(rounds):
        shift = r % len(names) if names else 0
        yield {name: timer(steps[name], iters[name]) / iters[name]
               for name in names[shift:] + names[:shift]}


def _rss_bytes() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def release_freed_memory(device: torch.device | None = None) -> None:
    """Collect garbage, empty the CUDA cache and return freed heap memory to the system."""
    gc.collect()
    if device is not None and device.type == 'cuda':
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except OSError:
        pass


def peak_memory_mib(step: Step, device: torch.device) -> float:
    """Peak memory of one call of ``step`` above the level before it, in MiB.

    On CUDA the allocator's peak; on the CPU the resident set size sampled every millisecond
    in a thread, after freed memory went back to the system (so it includes the allocator's
    slack).
    """
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    release_freed_memory()
    before = peak = _rss_bytes()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    step()
    done.set()
    sampler.join()
    peak = max(peak, _rss_bytes())
    return (peak - before) / 2**20


def device_description(device: torch.device) -> str:
    """The GPU's name, or the CPU's with the number of torch threads."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return (f'CPU ({platform.processor() or platform.machine()}), '
            f'{torch.get_num_threads()} threads')
