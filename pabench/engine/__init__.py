"""Engine layer: scheduler, dummy-weight decoder model, the engine loop and its records.

Nothing is imported eagerly here so that `pabench.engine.records` stays torch-free.
"""
