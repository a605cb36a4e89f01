"""ascent's shared package: pure tensor kernels, the model zoo, the job spec and the store.

Modules that import torch (``models``, ``losses``, ``kernels``) are not imported here, so the
producer can use ``spec``, ``store`` and ``classes`` without torch installed.
"""

__version__ = "0.1.0"
