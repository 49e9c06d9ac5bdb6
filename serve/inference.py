"""Entry point for the SageMaker PyTorch inference container (``SAGEMAKER_PROGRAM=inference.py``).

The container imports this file from ``/opt/ml/model/code`` and looks up the four handlers by name.
"""
from serve.handlers import input_fn, model_fn, output_fn, predict_fn

__all__ = ["model_fn", "input_fn", "predict_fn", "output_fn"]
