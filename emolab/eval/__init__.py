"""Using trained runs: export (ONNX), and more to come (predict, evaluate)."""
