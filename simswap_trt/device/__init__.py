"""The device implementations of the stages: frames uploaded once, kernels and plans on device memory.

``stages`` (``DeviceStages``: preprocess, plans, paste-back for a batch), ``detect`` (``DeviceDetector``:
the letterbox kernel into the detector plan), ``frames`` (frames kept resident between detection and swap),
``tables`` (the host planning of the kernels' tables). The host implementations are in ``vision``.
"""
