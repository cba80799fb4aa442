"""palsgd: predict (SimPy) and measure (torch.distributed) DDP vs Local SGD vs DiLoCo vs PALSGD."""

__version__ = "0.1.0"
