"""The engine: data, models, the training loop, storage, executors, registries, recipe versions, statistics.
Everything above it (attacks, defences, threats, detectors, experiments, reporting, studies) may import it;
it imports none of them (tests/test_layout.py)."""
