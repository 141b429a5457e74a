"""Steering engine: models, feature vectors, hooks, batched generation, sweeps.

Importing this package loads no torch; the submodules that need it import it themselves, so
`steering.store` serves statistics and reports on machines without torch.
"""
