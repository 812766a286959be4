"""Fine-tuning (needs the ``train`` extra: torch, transformers).

Nothing here is imported at run time; inference uses onnxruntime only.
"""

# Which word pieces ``--mask-prob`` may replace (``loop._mask_ids``); kept
# here, free of torch, so the CLI can list them without the extra.
MASK_SCOPES: tuple[str, ...] = ("all", "non-modifier", "entity")
