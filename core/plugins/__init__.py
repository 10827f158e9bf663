"""Drop a module here to add an attack, threat model or detector: it is imported with the built-in entries
(core.engine.registry.load_builtins) and registers itself with ATTACKS / THREATS / DETECTORS.register (README:
Extending)."""
