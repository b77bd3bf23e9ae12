"""What the tests share: stand-ins of the GPU, TensorRT and Jetson, checkpoint and clip makers, and fixtures
(the fixture modules are pytest plugins listed in tests/conftest.py). Test modules import from here, never
from one another."""
