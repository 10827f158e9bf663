"""Detectors: what scores a training image or an input as suspicious (the DAE and the registered scores,
training-set detectors, abstention by MC dropout). Registered in core.engine.registry.DETECTORS on import."""
