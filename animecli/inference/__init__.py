"""Running a generator: device and backend choice, memory budget, the PyTorch and the
torch-free onnxruntime engines, tiling, and the compiled-graph cache."""
