"""Threat models, one file each; importing this package registers them in core.engine.registry.THREATS.
The import order is the order the CLI and the app list them in."""

# isort: skip_file
from core.threats import perturbation  # noqa: F401 - imported to register
from core.threats import tap  # noqa: F401
from core.threats import unlearnable  # noqa: F401
from core.threats import label_flip  # noqa: F401
from core.threats import backdoor  # noqa: F401
from core.threats import ops  # noqa: F401
from core.threats import cuda  # noqa: F401
from core.threats import adaptive  # noqa: F401
