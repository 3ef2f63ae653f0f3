"""Knowledge distillation: train our own student generators from ONNX teachers.

Training-only dependencies (``onnxruntime``) live in the ``train`` extra; the
converter never imports this package.
"""
