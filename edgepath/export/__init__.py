"""Export: ONNX, OpenVINO IR, TensorRT engines, Jetson build bundles, Triton repositories."""
