"""LeNet-5 as the thesis describes it (LeCun et al. 1998, with ReLU and max-pooling): 61,706 parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 6, 5)  # 32x32 -> 6@28x28
        self.c3 = nn.Conv2d(6, 16, 5)  # 14x14 -> 16@10x10
        self.c5 = nn.Conv2d(16, 120, 5)  # 5x5 -> 120@1x1
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == 28:  # 28x28 digits are zero-padded to 32x32, as in the original network
            x = F.pad(x, (2, 2, 2, 2))
        x = F.max_pool2d(F.relu(self.c1(x)), 2)  # S2: -> 14x14
        x = F.max_pool2d(F.relu(self.c3(x)), 2)  # S4: -> 5x5
        x = F.relu(self.c5(x)).flatten(1)  # C5: -> 120
        x = F.relu(self.f6(x))
        return self.out(x)  # logits; softmax lives in the cross-entropy loss
