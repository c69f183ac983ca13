"""Test code shared by several test modules (fixtures stay in conftest.py)."""
from __future__ import annotations

import http.server
import threading
from collections import Counter
from pathlib import Path

import torch

__all__ = ['CountingServer', 'rel_error']


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """|out - ref| / |ref| (Frobenius norms), computed in float64."""
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


class CountingServer:
    """Serves a folder on 127.0.0.1 and counts the GET requests per path."""

    def __init__(self, root: Path):
        counts = self.counts = Counter()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                counts[self.path] += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.server.server_address[1]}/{name}'

    def __enter__(self) -> CountingServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
