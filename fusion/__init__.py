"""Plain ``nn.Module`` heads that consume cached features (no Lightning here)."""
