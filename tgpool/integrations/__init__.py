"""Bringing tgpool to existing models: ``patch`` swaps torch.nn and timm pooling modules."""
