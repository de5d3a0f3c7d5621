"""Shared test fixtures."""

from __future__ import annotations

import torch

# Two cores on CI machines: keep torch from oversubscribing them.
torch.set_num_threads(2)
