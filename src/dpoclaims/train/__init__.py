"""Building pairs: DPO training, the toy organism, and named pairs built on first use."""
