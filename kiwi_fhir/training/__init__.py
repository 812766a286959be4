"""Fine-tuning (needs the ``train`` extra: torch, transformers).

Nothing here is imported at run time; inference uses onnxruntime only.
"""
