"""Engine: models, devices, value types, batched patch inference, blending, TTA, ONNX."""
