"""Bringing tgpool to existing models: ``patch`` swaps torch.nn and timm pooling modules;
``enable`` routes ATen's pooling ops (functional calls and global reductions included)."""
